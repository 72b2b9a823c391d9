"""An int8 copy of a ViT's blocks for CPUs: dynamic quantisation of every linear layer of the vision encoder.

Radiology workstations often have no GPU, and on the CPU the ViT's linear layers are most of the work.
Dynamic quantisation (weights int8 per output channel, activations quantised per batch on the fly,
accumulation in int32, fbgemm/VNNI kernels) is the standard post-training scheme for transformer
encoders and needs no calibration data. Attention products, layer norms, the maps and the scoring
stay fp32. The text encoder is not touched: its features are computed once per model.

This trades accuracy for speed; its score and map differences against fp32 are measured in
benchmarks/bench_int8.py, and with real CLIP weights they are unverified until measured. It uses
torch.ao's dynamic quantisation, which this torch marks deprecated (its warning is silenced here, once
per conversion); a torch without it makes `int8_available()` false and the option is refused.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
from torch.ao.quantization import per_channel_dynamic_qconfig


class Int8Attention(nn.Module):
    """The parts of a block's attention that `transformer_block` reads, with int8 input and output projections."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        in_proj = nn.Linear(attention.embed_dim, 3 * attention.embed_dim)
        in_proj.weight.data.copy_(attention.in_proj_weight.detach())
        in_proj.bias.data.copy_(attention.in_proj_bias.detach())
        self.in_proj = _int8_linear(in_proj)
        self.out_proj = _int8_linear(attention.out_proj)


def int8_blocks(blocks: nn.ModuleList) -> nn.ModuleList:
    """Quantised copies of `blocks` (the originals, shared with the backbone, stay fp32)."""
    _select_engine()
    quantised = nn.ModuleList()
    for block in blocks:
        block = copy.deepcopy(block)
        block.attn = Int8Attention(block.attn)
        block.mlp.c_fc = _int8_linear(block.mlp.c_fc)
        block.mlp.c_proj = _int8_linear(block.mlp.c_proj)
        quantised.append(block)
    return quantised


def int8_available() -> bool:
    """Whether this torch build has an x86 int8 kernel library."""
    return bool({"fbgemm", "x86"} & set(torch.backends.quantized.supported_engines))


def _select_engine() -> None:
    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "fbgemm" if "fbgemm" in engines else "x86"


def _int8_linear(linear: nn.Linear) -> DynamicInt8Linear:
    plain = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    plain.load_state_dict({name: value.detach().float() for name, value in linear.state_dict().items()})
    plain.qconfig = per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        return DynamicInt8Linear.from_float(plain)
