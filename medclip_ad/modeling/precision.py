"""Where reduced precision is allowed: in the CLIP backbone, and nowhere after it.

Autocast (bf16/fp16) speeds up the transformer blocks at a cost of about three significant digits per
value, which the embeddings absorb. The scoring head does not: logits are cosine similarities divided
by a temperature of 0.07 (or multiplied by 100), so a bf16 product errs by up to 0.03 in a logit and
scores collapse onto a few hundred distinct values. Every method therefore computes its logits,
softmax, maps, fusion and clustering inside `full_precision`, on fp32 copies of the embeddings.

With `--precision fp32` on CUDA, TF32 is switched off too (cuDNN's convolutions, among them CLIP's
patch embedding, use it by default), so "fp32" means IEEE fp32 everywhere.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def full_precision(like: torch.Tensor) -> AbstractContextManager:
    """A context with autocast off on `like`'s device; nothing at all when autocast is not on (tracing, fp32)."""
    device_type = like.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def disable_tf32() -> None:
    """IEEE fp32 for CUDA matrix products and convolutions (process-wide: torch keeps one setting)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
