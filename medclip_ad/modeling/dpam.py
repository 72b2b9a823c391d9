"""DPAM visual encoder: CLIP's ViT with a value-value attention path from block 6 on.

Query-key attention pools global semantics; for local anomalies the patch tokens should attend to
tokens that look like themselves, which value-value attention does. The v-v path reads the original
path's state in every block and never feeds back, so the global embedding stays vanilla CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import CLIP

from medclip_ad.constants import DPAM_FIRST_BLOCK
from medclip_ad.modeling.transformer_block import heads_qkv, merge_heads, mlp_step, vanilla_block


@dataclass
class VisualFeatures:
    """Encoder outputs: L2-normalised global embedding (B, D) and per-layer token embeddings (B, 1+N, D)."""

    global_embedding: torch.Tensor
    layer_tokens: list[torch.Tensor]


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


class DPAMVisionEncoder(nn.Module):
    """Encode images at a fixed size into the global embedding and DPAM token features of chosen layers."""

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
        self.image_size = image_size
        self.grid = image_size // patch
        self.register_buffer("position_embedding",
                             resize_position_embedding(visual.positional_embedding.detach(), self.grid),
                             persistent=False)
        depth = len(self.blocks)
        if not layers or any(not 1 <= layer <= depth for layer in layers):
            raise ValueError(f"layers {list(layers)} must be block indices between 1 and {depth}")
        self.layers = tuple(sorted(set(layers)))

    def forward(self, images: torch.Tensor) -> VisualFeatures:
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        state = self.ln_pre(torch.cat([cls, tokens], dim=1) + self.position_embedding.to(tokens.dtype))

        wanted = set(self.layers)
        layer_states: dict[int, torch.Tensor] = {}
        vv_state: torch.Tensor | None = None
        for index, block in enumerate(self.blocks, start=1):
            if index < DPAM_FIRST_BLOCK:
                state = vanilla_block(block, state)
                if index in wanted:
                    layer_states[index] = state
                continue
            q, k, v = heads_qkv(block, state)
            vv_update = merge_heads(block, F.scaled_dot_product_attention(v, v, v))
            # Out-of-place sums: every stored layer keeps its own tensor.
            vv_state = (state if vv_state is None else vv_state) + vv_update
            state = mlp_step(block, state + merge_heads(block, F.scaled_dot_product_attention(q, k, v)))
            if index in wanted:
                layer_states[index] = vv_state

        layer_tokens = [F.normalize(self.ln_post(layer_states[i]) @ self.projection, dim=-1) for i in self.layers]
        # The reference projects the final CLS without ln_post; released prompts were trained that way.
        global_embedding = F.normalize(state[:, 0] @ self.projection, dim=-1)
        return VisualFeatures(global_embedding, layer_tokens)
