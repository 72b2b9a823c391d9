"""Heatmap overlays for review images: the scan in grey, the anomaly map in colour on a fixed scale.

The colour scale is fixed at [0, number of layers] (the map's full range), never stretched per image,
so the same colour means the same anomaly probability on every slice and every case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps


@dataclass(frozen=True)
class OverlayStyle:
    """How a map is drawn: colormap, opacity, the map value drawn fully saturated, and a display threshold."""

    colormap: str = "jet"
    opacity: float = 0.5
    vmax: float = 1.0
    threshold: float = 0.0


def overlay(image: np.ndarray, anomaly_map: np.ndarray, style: OverlayStyle = OverlayStyle()) -> np.ndarray:
    """Blend a (H, W) map over an 8-bit (H, W) or (H, W, 3) image; pixels below the threshold stay grey."""
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
    if rgb.shape[:2] != anomaly_map.shape:
        raise ValueError(f"map shape {anomaly_map.shape} differs from image shape {rgb.shape[:2]}")
    scaled = np.clip(anomaly_map / style.vmax, 0.0, 1.0)
    colours = colormaps[style.colormap](scaled)[:, :, :3] * 255.0
    alpha = np.where(anomaly_map >= style.threshold, style.opacity, 0.0)[:, :, None]
    return np.round(rgb * (1.0 - alpha) + colours * alpha).astype(np.uint8)
