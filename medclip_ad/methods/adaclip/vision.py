"""AdaCLIP's visual side: CLIP's ViT with standard attention everywhere (no DPAM) and hybrid visual prompts.

At block 1 the hybrid tokens are appended after the image tokens; before blocks 2..depth they are
overwritten with that layer's tokens. They stay in the sequence (every later block sees them) but are
never part of the patch outputs. Without prompts the encoder is plain CLIP, which gives the frozen
image embedding the dynamic prompts are generated from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from open_clip.model import CLIP

from medclip_ad.modeling.transformer_block import vanilla_block
from medclip_ad.modeling.vision_tower import ClipVisionTower

# The reference resizes the position grid once at load, bicubically.
POSITION_RESIZE_MODE = "bicubic"


@dataclass
class PromptedVisualFeatures:
    """CLIP's image embedding before normalisation (B, D) and raw residual-stream patch tokens (B, N, width)
    of each feature layer (CLS and prompt tokens excluded)."""

    image_embedding: torch.Tensor
    patch_tokens: list[torch.Tensor]


class HybridPromptVisionEncoder(ClipVisionTower):
    """Images (B, 3, S, S), normalised, and optional prompts (B, depth, length, width) -> `PromptedVisualFeatures`."""

    def __init__(self, clip: CLIP, image_size: int, layers: Sequence[int]) -> None:
        super().__init__(clip, image_size, layers, position_mode=POSITION_RESIZE_MODE)

    @property
    def width(self) -> int:
        return self.patch_embed.out_channels

    @property
    def embed_dim(self) -> int:
        return self.projection.shape[1]

    def forward(self, images: torch.Tensor, prompts: torch.Tensor | None = None) -> PromptedVisualFeatures:
        state = self.embed(images)
        image_tokens = state.shape[1]
        prompted = 0 if prompts is None else prompts.shape[1]
        wanted = set(self.layers)
        patch_tokens = []
        for index, block in enumerate(self.blocks, start=1):
            if index <= prompted:
                state = torch.cat([state[:, :image_tokens], prompts[:, index - 1].to(state.dtype)], dim=1)
            state = vanilla_block(block, state)
            if index in wanted:
                patch_tokens.append(state[:, 1:image_tokens])
        return PromptedVisualFeatures(self.ln_post(state[:, 0]) @ self.projection, patch_tokens)
