"""AdaCLIP's text side: a class-aware sentence ensemble encoded through hybrid-prompted text blocks.

Every sentence starts with placeholder words whose input embeddings are replaced by the first layer's
hybrid tokens; block 1 then runs unchanged, and before blocks 2..depth those positions are
overwritten with that layer's tokens. Since the dynamic part of the tokens belongs to one image, text
features belong to one image too: a batch of B images encodes B x sentences sequences at once.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medclip_ad.config import ADACLIP_OBJECT_WORD
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.modeling.tokenizer import tokenize
from medclip_ad.modeling.transformer_block import vanilla_block

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = ("a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
             "a cropped photo of the {}.")
PLACEHOLDER_WORD = "X"


def adaclip_sentences(object_word: str = ADACLIP_OBJECT_WORD) -> tuple[list[str], list[str]]:
    """The [normal] and [abnormal] sentences: every state of a class in every template."""

    def fill(states: tuple[str, ...]) -> list[str]:
        return [template.format(state.format(object_word)) for state in states for template in TEMPLATES]

    return fill(NORMAL_STATES), fill(ABNORMAL_STATES)


class HybridPromptTextEncoder(nn.Module):
    """Hybrid text tokens (B, depth, length, width) -> per-image [normal, abnormal] features (B, 2, D)."""

    def __init__(self, text_encoder: TextEncoder, prompt_length: int, object_word: str = ADACLIP_OBJECT_WORD) -> None:
        super().__init__()
        self.encoder = text_encoder
        self.object_word = object_word
        self.prompt_length = prompt_length
        normal, abnormal = adaclip_sentences(object_word)
        placeholder = " ".join([PLACEHOLDER_WORD] * prompt_length)
        token_ids = tokenize([f"{placeholder} {sentence}" for sentence in normal + abnormal])
        end_of_text = token_ids.argmax(dim=-1)
        # Attention is causal and features are read at end-of-text, so the padding after it can be cut.
        token_ids = token_ids[:, :int(end_of_text.max()) + 1]
        with torch.no_grad():
            embeddings = text_encoder.embed_tokens(token_ids.to(text_encoder.token_embedding.weight.device))
        self.register_buffer("embeddings", embeddings, persistent=False)
        self.register_buffer("end_of_text", end_of_text, persistent=False)
        self.normal_count = len(normal)

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        """Encode every sentence with each image's prompts; average per class, normalised."""
        batch, depth = prompts.shape[:2]
        sentences, context, width = self.embeddings.shape
        span = self.prompt_length
        prompts = prompts.to(self.embeddings.dtype)

        def per_sentence(layer: int) -> torch.Tensor:
            return prompts[:, layer].unsqueeze(1).expand(batch, sentences, span, width).reshape(-1, span, width)

        fixed = self.embeddings.unsqueeze(0).expand(batch, -1, -1, -1).reshape(-1, context, width)
        state = torch.cat([fixed[:, :1], per_sentence(0), fixed[:, 1 + span:]], dim=1)
        state = state + self.encoder.position_embedding[:context].to(state.dtype)
        for index, block in enumerate(self.encoder.blocks):
            if 1 <= index < depth:
                state = torch.cat([state[:, :1], per_sentence(index), state[:, 1 + span:]], dim=1)
            state = vanilla_block(block, state, causal=True)
        rows = torch.arange(state.shape[0], device=state.device)
        pooled = self.encoder.ln_final(state)[rows, self.end_of_text.repeat(batch)] @ self.encoder.projection
        features = F.normalize(pooled, dim=-1).reshape(batch, sentences, -1)
        classes = [features[:, :self.normal_count].mean(dim=1), features[:, self.normal_count:].mean(dim=1)]
        return F.normalize(torch.stack(classes, dim=1), dim=-1)
