"""`--compile`: the vision encoders compiled by torch.compile, optionally replayed as CUDA graphs.

`inductor` compiles each vision encoder's forward with TorchInductor (the elementwise steps around the
matrix products fused into C++/OpenMP kernels on the CPU, Triton kernels on CUDA). `cuda-graphs` adds
torch.compile's "reduce-overhead" mode: the compiled kernels are recorded as one CUDA graph per batch
size and replayed, which removes the per-kernel launch cost that dominates a fast GPU at small batches.
Shapes are static, so every batch size compiles (and records) once; a volume costs at most two, its full
batches and its last one. The text encoder, maps and blur stay eager. Outputs equal eager ones to fp32
rounding (tests/test_compilation.py); off by default until measured on a GPU (benchmarks/gpu_check.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medclip_ad.config import COMPILE_MODES
from medclip_ad.errors import UserInputError
from medclip_ad.modeling.vision_tower import ClipVisionTower


def check_compile_request(mode: str, device: torch.device, precision: str) -> None:
    """Refuse what cannot run before any weights load: CUDA graphs off CUDA, int8 kernels under inductor."""
    if mode not in COMPILE_MODES:
        raise UserInputError(f"--compile {mode}: choose from {', '.join(COMPILE_MODES)}")
    if mode == "cuda-graphs" and device.type != "cuda":
        raise UserInputError(f"--compile cuda-graphs: CUDA graphs need a CUDA device (this run is on {device}); "
                             "on the CPU use --compile inductor")
    if mode != "off" and precision == "int8":
        raise UserInputError("--compile: not with --precision int8 (its quantised layers run eagerly)")


def compile_vision_encoders(model: nn.Module, mode: str) -> None:
    """Compile every vision encoder of `model` in place (its parameters and state dict stay as they are)."""
    if mode == "off":
        return
    options = {"mode": "reduce-overhead"} if mode == "cuda-graphs" else {}
    for module in model.modules():
        if isinstance(module, ClipVisionTower):
            module.compile(dynamic=False, **options)


def mark_step(mode: str) -> None:
    """Before each batch under CUDA graphs: the previous batch's graph outputs may now be overwritten."""
    if mode == "cuda-graphs":
        torch.compiler.cudagraph_mark_step_begin()
