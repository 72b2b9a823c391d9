"""From embeddings to what users see: image scores and anomaly maps.

All similarities use the fixed temperature of the method. Maps are sums of per-layer abnormal
probabilities (range [0, number of layers]) and are never normalised per image, so they can be
compared across images and slices. Everything here runs in fp32 with autocast off, whatever precision
the backbone ran in (see `medclip_ad.modeling.precision`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medclip_ad.constants import TEMPERATURE
from medclip_ad.modeling.gaussian_blur import gaussian_blur
from medclip_ad.modeling.precision import full_precision


def class_logits(features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities to [normal, abnormal] over the temperature, in fp32: (..., D) -> (..., 2)."""
    with full_precision(features):
        return features.float() @ text_features.float().t() / TEMPERATURE


def patch_probability_maps(layer_tokens: torch.Tensor, text_features: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pixel [normal, abnormal] probabilities (B, 2, size, size) from one layer's tokens (B, 1+N, D)."""
    with full_precision(layer_tokens):
        return upsample_patch_probabilities(class_logits(layer_tokens[:, 1:], text_features).softmax(dim=-1), size)


def upsample_patch_probabilities(probabilities: torch.Tensor, size: int) -> torch.Tensor:
    """Patch probabilities (B, N, 2) on a square grid -> (B, 2, size, size), bilinear, in fp32."""
    batch, tokens, _ = probabilities.shape
    grid = round(int(tokens) ** 0.5)  # int(): under torch.jit.trace sizes are tensors; the grid is fixed per model
    square = probabilities.float().transpose(1, 2).reshape(batch, 2, grid, grid)
    with full_precision(square):
        return F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False)


def layer_anomaly_map(probability_maps: torch.Tensor) -> torch.Tensor:
    """(P_abnormal + 1 - P_normal) / 2 of one layer: (B, 2, S, S) -> (B, S, S)."""
    return (probability_maps[:, 1] + 1 - probability_maps[:, 0]) / 2


def anomaly_map(per_layer_probability_maps: list[torch.Tensor], blur: bool = True) -> torch.Tensor:
    """Final map (B, S, S): the layer maps summed, then smoothed."""
    total = torch.stack([layer_anomaly_map(p) for p in per_layer_probability_maps]).sum(dim=0)
    return gaussian_blur(total.float()) if blur else total
