"""AdaCLIP's text side: a class-aware sentence ensemble encoded through hybrid-prompted text blocks.

The sentences are tokenised as they are. Text block 1 runs on them unprompted; before blocks
2..depth the hidden states at positions 1..length (the first template words after the start token)
are overwritten with that layer's hybrid tokens, so the text prompt of layer 0 is never used: this
is what the reference computes, and what its released weights were trained with. Since the dynamic
part of the tokens belongs to one image, text features belong to one image too: a batch of B images
encodes B x sentences sequences at once.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medclip_ad.methods.adaclip.recipe import ADACLIP_OBJECT_WORD
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.modeling.tokenizer import tokenize
from medclip_ad.modeling.transformer_block import vanilla_block

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = ("a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
             "a cropped photo of the {}.")


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
        token_ids = tokenize(normal + abnormal)
        end_of_text = token_ids.argmax(dim=-1)
        if int(end_of_text.min()) <= prompt_length:
            raise ValueError(f"object word {object_word!r}: a sentence is too short for {prompt_length} prompt tokens")
        # Attention is causal and features are read at end-of-text, so the padding after it can be cut.
        token_ids = token_ids[:, :int(end_of_text.max()) + 1]
        with torch.no_grad():
            embeddings = text_encoder.embed_tokens(token_ids.to(text_encoder.token_embedding.weight.device))
        self.register_buffer("embeddings", embeddings, persistent=False)
        self.register_buffer("end_of_text", end_of_text, persistent=False)
        self.normal_count = len(normal)

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        """Encode every sentence with each image's prompts; average per class, normalised.

        Layer 0 of `prompts` is not used: text block 1 runs on the plain sentences, as in the reference.
        """
        batch, depth = prompts.shape[:2]
        sentences, context, width = self.embeddings.shape
        span = self.prompt_length

        def per_sentence(layer: int) -> torch.Tensor:
            return prompts[:, layer].unsqueeze(1).expand(batch, sentences, span, width).reshape(-1, span, width)

        state = self.embeddings.unsqueeze(0).expand(batch, -1, -1, -1).reshape(-1, context, width)
        state = state + self.encoder.position_embedding[:context].to(state.dtype)
        for index, block in enumerate(self.encoder.blocks):
            if 1 <= index < depth:
                state = torch.cat([state[:, :1], per_sentence(index).to(state.dtype), state[:, 1 + span:]], dim=1)
            state = vanilla_block(block, state, causal=True)
        rows = torch.arange(state.shape[0], device=state.device)
        pooled = self.encoder.ln_final(state)[rows, self.end_of_text.repeat(batch)] @ self.encoder.projection
        features = F.normalize(pooled, dim=-1).reshape(batch, sentences, -1)
        classes = [features[:, :self.normal_count].mean(dim=1), features[:, self.normal_count:].mean(dim=1)]
        return F.normalize(torch.stack(classes, dim=1), dim=-1)
