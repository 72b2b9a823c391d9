"""AdaCLIP's hybrid prompts for one encoder branch: learned static tokens plus per-image dynamic tokens.

Static tokens adapt CLIP to anomaly detection in general; the dynamic tokens, generated from each
image's frozen CLIP embedding, let the prompts follow the image at hand (a new modality or object).
Their sum, per image and per prompted layer, is what the encoder injects.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# Prompted blocks per branch and prompt tokens per block.
PROMPT_DEPTH = 4
PROMPT_LENGTH = 5
STATIC_INIT_STD = 0.02


class HybridPrompter(nn.Module):
    """Frozen image embeddings (B, D) -> hybrid prompt tokens (B, depth, length, width)."""

    def __init__(self, embed_dim: int, width: int, depth: int = PROMPT_DEPTH, length: int = PROMPT_LENGTH) -> None:
        super().__init__()
        self.static = nn.Parameter(torch.randn(depth, length, width) * STATIC_INIT_STD)
        # One independent linear head per dynamic token.
        self.generators = nn.ModuleList([nn.Linear(embed_dim, width) for _ in range(length)])

    @property
    def depth(self) -> int:
        return self.static.shape[0]

    @property
    def length(self) -> int:
        return self.static.shape[1]

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """Static tokens of every layer plus the image's dynamic tokens (the same for every layer)."""
        dynamic = torch.stack([generator(image_embedding) for generator in self.generators], dim=1)
        return self.static.unsqueeze(0) + dynamic.unsqueeze(1)
