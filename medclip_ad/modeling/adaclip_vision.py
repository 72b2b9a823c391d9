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
import torch.nn as nn
from open_clip.model import CLIP

from medclip_ad.modeling.dpam import resize_position_embedding
from medclip_ad.modeling.transformer_block import vanilla_block

# The reference resizes the position grid once at load, bicubically.
POSITION_RESIZE_MODE = "bicubic"


@dataclass
class PromptedVisualFeatures:
    """CLIP's image embedding before normalisation (B, D) and raw residual-stream patch tokens (B, N, width)
    of each feature layer (CLS and prompt tokens excluded)."""

    image_embedding: torch.Tensor
    patch_tokens: list[torch.Tensor]


class HybridPromptVisionEncoder(nn.Module):
    """Images (B, 3, S, S), normalised, and optional prompts (B, depth, length, width) -> `PromptedVisualFeatures`."""

    def __init__(self, clip: CLIP, image_size: int, layers: Sequence[int]) -> None:
        super().__init__()
        visual = clip.visual
        self.patch_embed = visual.conv1
        self.blocks = visual.transformer.resblocks
        self.ln_pre, self.ln_post = visual.ln_pre, visual.ln_post
        self.class_embedding = visual.class_embedding
        self.projection = visual.proj
        patch = visual.conv1.kernel_size[0]
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        depth = len(self.blocks)
        if not layers or any(not 1 <= layer <= depth for layer in layers):
            raise ValueError(f"layers {list(layers)} must be block indices between 1 and {depth}")
        self.image_size = image_size
        self.grid = image_size // patch
        self.layers = tuple(sorted(set(layers)))
        self.register_buffer("position_embedding",
                             resize_position_embedding(visual.positional_embedding.detach(), self.grid,
                                                       mode=POSITION_RESIZE_MODE), persistent=False)

    @property
    def width(self) -> int:
        return self.patch_embed.out_channels

    @property
    def embed_dim(self) -> int:
        return self.projection.shape[1]

    def forward(self, images: torch.Tensor, prompts: torch.Tensor | None = None) -> PromptedVisualFeatures:
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        state = self.ln_pre(torch.cat([cls, tokens], dim=1) + self.position_embedding.to(tokens.dtype))
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
