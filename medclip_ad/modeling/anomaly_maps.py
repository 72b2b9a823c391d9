"""From embeddings to what users see: image scores and anomaly maps.

All similarities use the fixed temperature of the method. Maps are sums of per-layer abnormal
probabilities (range [0, number of maps]) and are never normalised per image, so they can be
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


def upsample_patch_grid(values: torch.Tensor, size: int, align_corners: bool = False) -> torch.Tensor:
    """Per-patch values (B, N, C) on the square patch grid -> (B, C, size, size), bilinear, in fp32.

    AnomalyCLIP and rwda upsample probabilities with `align_corners=False`; AdaCLIP upsamples logits
    with `align_corners=True`, as its reference does.
    """
    batch, tokens, channels = values.shape
    grid = round(int(tokens) ** 0.5)  # int(): under torch.jit.trace sizes are tensors; the grid is fixed per model
    square = values.float().transpose(1, 2).reshape(batch, channels, grid, grid)
    with full_precision(square):
        return F.interpolate(square, size=(size, size), mode="bilinear", align_corners=align_corners)


def patch_probability_maps(layer_tokens: torch.Tensor, text_features: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pixel [normal, abnormal] probabilities (B, 2, size, size) from one layer's tokens (B, 1+N, D)."""
    with full_precision(layer_tokens):
        return upsample_patch_grid(class_logits(layer_tokens[:, 1:], text_features).softmax(dim=-1), size)


def layer_anomaly_maps(probability_maps: list[torch.Tensor]) -> torch.Tensor:
    """(P_abnormal + 1 - P_normal) / 2 of each map, in float32: L x (B, 2, S, S) -> (B, L, S, S)."""
    return torch.stack([(p[:, 1].float() + 1 - p[:, 0].float()) / 2 for p in probability_maps], dim=1)


def anomaly_map(probability_maps: list[torch.Tensor]) -> torch.Tensor:
    """The final map (B, S, S) every output shows: the layer maps summed, then smoothed."""
    return gaussian_blur(layer_anomaly_maps(probability_maps).sum(dim=1))
