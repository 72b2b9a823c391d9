"""The parts of CLIP's ViT that every visual encoder here shares: its modules, the resized position
grid, the validated feature layers, and the patch embedding up to the first block."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import CLIP


def resize_position_embedding(position_embedding: torch.Tensor, grid: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize the patch part of a ViT position embedding to `grid` x `grid` (bilinear unless `mode`); CLS kept."""
    cls_position, patch_positions = position_embedding[:1], position_embedding[1:]
    old_grid = round(patch_positions.shape[0] ** 0.5)
    if old_grid == grid:
        return position_embedding.clone()
    width = patch_positions.shape[1]
    square = patch_positions.reshape(1, old_grid, old_grid, width).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=(grid, grid), mode=mode, align_corners=False)
    return torch.cat([cls_position, resized.permute(0, 2, 3, 1).reshape(grid * grid, width)])


class ClipVisionTower(nn.Module):
    """CLIP's visual modules at a fixed input size; subclasses define how the blocks run."""

    def __init__(self, clip: CLIP, image_size: int, layers: Sequence[int], position_mode: str = "bilinear") -> None:
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
                                                       mode=position_mode), persistent=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> the token sequence (B, 1 + N, width) that enters block 1."""
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        return self.ln_pre(torch.cat([cls, tokens], dim=1) + self.position_embedding.to(tokens.dtype))
