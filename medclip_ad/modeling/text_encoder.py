"""CLIP's text transformer, open to learned input embeddings and deep prompts.

The stock encoder only takes token ids; prompt learning needs to feed embeddings directly and to
overwrite hidden states inside the first blocks, so the forward pass is written out here.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import CLIP

from medclip_ad.modeling.transformer_block import vanilla_block


class TextEncoder(nn.Module):
    """Encode sentences given as token embeddings (S, context, width) into L2-normalised features (S, D)."""

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.position_embedding = clip.positional_embedding
        self.blocks = clip.transformer.resblocks
        self.ln_final = clip.ln_final
        self.projection = clip.text_projection

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (S, context) -> the fixed word embeddings (S, context, width)."""
        return self.token_embedding(token_ids)

    def forward(self, embeddings: torch.Tensor, token_ids: torch.Tensor,
                deep_prompts: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Run the causal transformer; deep_prompts[i] overwrites positions 1..len before block i + 2.

        A deep prompt is (length, width), or (S, length, width) with one copy per sentence; it is promoted
        to the stream's dtype as it goes in.

        Features are pooled at each sentence's end-of-text token (the largest token id).
        """
        state = embeddings + self.position_embedding.to(embeddings.dtype)
        for index, block in enumerate(self.blocks):
            if 1 <= index <= len(deep_prompts):
                prompt = deep_prompts[index - 1].to(state.dtype)
                span = prompt.shape[-2]
                state = torch.cat([state[:, :1], prompt.expand(state.shape[0], -1, -1), state[:, 1 + span:]], dim=1)
            state = vanilla_block(block, state, causal=True)
        end_of_text = token_ids.argmax(dim=-1)
        pooled = self.ln_final(state)[torch.arange(state.shape[0], device=state.device), end_of_text]
        return F.normalize(pooled @ self.projection, dim=-1)
