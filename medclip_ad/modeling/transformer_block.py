"""One CLIP residual block, computed from open_clip's parameters in a form both encoders can reuse.

open_clip's own block forward hides the values V that DPAM needs, so the block is split into its
steps here: the shared q/k/v projection of LN1(x), attention over chosen inputs, and the MLP step.
Tensors are batch-first: (batch, tokens, width).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from medclip_ad.modeling.int8 import Int8Attention


def heads_qkv(block: ResidualAttentionBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of LN1(x), each (batch, heads, tokens, head_dim)."""
    attn = block.attn
    batch, tokens, width = x.shape
    qkv = in_projection(attn, block.ln_1(x))
    qkv = qkv.view(batch, tokens, 3, attn.num_heads, width // attn.num_heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def in_projection(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The joint q/k/v projection: one fp32 parameter in open_clip's attention, a module in an int8 copy."""
    if isinstance(attn, Int8Attention):
        return attn.in_proj(x)
    return F.linear(x, attn.in_proj_weight, attn.in_proj_bias)


def merge_heads(block: ResidualAttentionBlock, heads: torch.Tensor) -> torch.Tensor:
    """Concatenate heads and apply the block's output projection (and layer scale, if any)."""
    batch, _, tokens, _ = heads.shape
    merged = heads.transpose(1, 2).reshape(batch, tokens, -1)
    return block.ls_1(block.attn.out_proj(merged))


def mlp_step(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's second residual step: x + MLP(LN2(x))."""
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def vanilla_block(block: ResidualAttentionBlock, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """The unmodified CLIP block: x + Attn(LN1(x)), then the MLP step."""
    q, k, v = heads_qkv(block, x)
    x = x + merge_heads(block, F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    return mlp_step(block, x)
