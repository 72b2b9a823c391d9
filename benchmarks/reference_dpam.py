"""The DPAM encoder computed in full, as the reference computes it: both paths in every block from block 6,
every token through the last block, one attention call per path. `DPAMVisionEncoder` skips what its
outputs never read; this is the baseline it must equal (tests) and beat (bench_side_by_side.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from medclip_ad.constants import DPAM_FIRST_BLOCK
from medclip_ad.modeling.dpam import DPAMVisionEncoder, VisualFeatures
from medclip_ad.modeling.transformer_block import heads_qkv, merge_heads, mlp_step, vanilla_block


def full_dpam_forward(encoder: DPAMVisionEncoder, images: torch.Tensor) -> VisualFeatures:
    state = encoder.embed(images)
    layer_states: dict[int, torch.Tensor] = {}
    vv_state = None
    for index, block in enumerate(encoder.blocks, start=1):
        if index < DPAM_FIRST_BLOCK:
            state = vanilla_block(block, state)
            layer_states[index] = state
            continue
        q, k, v = heads_qkv(block, state)
        vv_update = merge_heads(block, F.scaled_dot_product_attention(v, v, v))
        vv_state = (state if vv_state is None else vv_state) + vv_update
        state = mlp_step(block, state + merge_heads(block, F.scaled_dot_product_attention(q, k, v)))
        layer_states[index] = vv_state
    tokens = [F.normalize(encoder.ln_post(layer_states[i]) @ encoder.projection, dim=-1) for i in encoder.layers]
    return VisualFeatures(F.normalize(state[:, 0] @ encoder.projection, dim=-1), tokens)
