"""DPAM visual encoder: CLIP's ViT with a value-value attention path from block 6 on.

Query-key attention pools global semantics; for local anomalies the patch tokens should attend to
tokens that look like themselves, which value-value attention does. The v-v path reads the original
path's state in every block and never feeds back, so the global embedding stays vanilla CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medclip_ad.constants import DPAM_FIRST_BLOCK
from medclip_ad.errors import UserInputError
from medclip_ad.modeling.clip_backbone import ClipBackbone
from medclip_ad.modeling.transformer_block import heads_qkv, merge_heads, mlp_step, vanilla_block
from medclip_ad.modeling.vision_tower import ClipVisionTower


@dataclass
class VisualFeatures:
    """Encoder outputs: L2-normalised global embedding (B, D) and per-layer token embeddings (B, 1+N, D)."""

    global_embedding: torch.Tensor
    layer_tokens: list[torch.Tensor]


class DPAMVisionEncoder(ClipVisionTower):
    """Encode images at a fixed size into the global embedding and DPAM token features of chosen layers.

    Only what the outputs read is computed, with the same numbers as the full computation: the v-v path
    stops after the last requested layer, the last block's original path runs for the CLS token alone
    (the global embedding is all that reads it), and where both attentions of a block are needed they run
    as one batched attention call.
    """

    def forward(self, images: torch.Tensor) -> VisualFeatures:
        state = self.embed(images)
        wanted = set(self.layers)
        last_feature_layer, depth = max(self.layers), len(self.blocks)
        layer_states: dict[int, torch.Tensor] = {}
        vv_state: torch.Tensor | None = None
        for index, block in enumerate(self.blocks, start=1):
            if index < DPAM_FIRST_BLOCK:
                state = vanilla_block(block, state)
                if index in wanted:
                    layer_states[index] = state
                continue
            block_input = state
            q, k, v = heads_qkv(block, state)
            needs_vv = index <= last_feature_layer
            vv_update = None
            if index == depth:
                cls = state[:, :1] + merge_heads(block, F.scaled_dot_product_attention(q[:, :, :1], k, v))
                if needs_vv:
                    vv_update = merge_heads(block, F.scaled_dot_product_attention(v, v, v))
                state = mlp_step(block, cls)
            elif needs_vv:
                batch = state.shape[0]
                both = merge_heads(block, F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]),
                                                                         torch.cat([v, v])))
                vv_update = both[batch:]
                state = mlp_step(block, state + both[:batch])
            else:
                state = mlp_step(block, state + merge_heads(block, F.scaled_dot_product_attention(q, k, v)))
            if vv_update is not None:
                # Out-of-place sums: every stored layer keeps its own tensor.
                vv_state = (block_input if vv_state is None else vv_state) + vv_update
            if index in wanted:
                layer_states[index] = vv_state

        layer_tokens = [F.normalize(self.ln_post(layer_states[i]) @ self.projection, dim=-1) for i in self.layers]
        # The reference projects the final CLS without ln_post; released prompts were trained that way.
        global_embedding = F.normalize(state[:, 0] @ self.projection, dim=-1)
        return VisualFeatures(global_embedding, layer_tokens)


def build_dpam_encoder(backbone: ClipBackbone, image_size: int, layers: tuple[int, ...]) -> DPAMVisionEncoder:
    """The DPAM encoder of `backbone` for the options `--image-size` and `--layers`, refusing what does not fit."""
    try:
        return DPAMVisionEncoder(backbone.model, image_size, layers)
    except ValueError as error:
        raise UserInputError(f"--layers/--image-size: {error}") from error
