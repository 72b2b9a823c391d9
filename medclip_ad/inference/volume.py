"""Slice-wise inference on 3-D scans: the 2-D detector over every slice along one axis, batched.

Slices are read, mapped to 8 bits and scored a batch at a time, so memory beyond the input and the
output volume stays bounded by the batch size, whatever the number of slices. Each slice is fed as
stored in the scan's in-plane order (the slice array transposed, which for DICOM-derived arrays is the
scanner's own row/column layout) and its map is put back in the same place, so the map volume has
exactly the input's shape and geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from medclip_ad.config import AGGREGATIONS, PLANE_NORMALS
from medclip_ad.inference.predictor import AnomalyPredictor

# Slicing planes by the world axis they are perpendicular to (RAS: x left-right, y back-front, z feet-head).


@dataclass
class VolumeResult:
    """The map volume (the input's shape, float32) and one image score per slice along `axis`."""

    map_volume: np.ndarray
    slice_scores: np.ndarray
    axis: int


def slice_axis_for_plane(plane: str, affine: np.ndarray | None) -> int:
    """The array axis whose direction is closest to the plane's normal (identity geometry if unknown)."""
    if plane not in PLANE_NORMALS:
        raise ValueError(f"unknown plane {plane!r} (choose from {', '.join(PLANE_NORMALS)})")
    return int(np.argmax(_direction_weights(affine)[PLANE_NORMALS[plane]]))


def plane_of_axis(axis: int, affine: np.ndarray | None) -> str:
    """The anatomical plane that slicing along an array axis shows."""
    world_axis = int(np.argmax(_direction_weights(affine)[:, axis]))
    return {normal: name for name, normal in PLANE_NORMALS.items()}[world_axis]


def _direction_weights(affine: np.ndarray | None) -> np.ndarray:
    """|cosine| between world axes (rows) and array axes (columns)."""
    if affine is None:
        return np.eye(3)
    rotation = np.asarray(affine, dtype=np.float64)[:3, :3]
    return np.abs(rotation / np.linalg.norm(rotation, axis=0, keepdims=True))


def volume_score(slice_scores: np.ndarray, aggregation: str = "max", top_k: int = 5) -> float:
    """One number per volume: the highest slice score by default; top-k mean is steadier on noisy scans."""
    if slice_scores.size == 0:
        raise ValueError("a volume without slices has no score")
    if aggregation == "max":
        return float(slice_scores.max())
    if aggregation == "mean":
        return float(slice_scores.mean())
    if aggregation == "topk_mean":
        k = max(1, min(top_k, slice_scores.size))
        return float(np.sort(slice_scores)[-k:].mean())
    raise ValueError(f"unknown aggregation {aggregation!r} (choose from {', '.join(AGGREGATIONS)})")


def top_slices(slice_scores: np.ndarray, count: int) -> list[int]:
    """Indices of the highest-scoring slices, best first (ties keep slice order)."""
    order = np.argsort(-slice_scores, kind="stable")
    return [int(index) for index in order[:count]]


def infer_volume(predictor: AnomalyPredictor, volume: np.ndarray, axis: int,
                 to_uint8: Callable[[np.ndarray], np.ndarray],
                 progress: Callable[[int], None] | None = None) -> VolumeResult:
    """Score every slice of a (I, J, K) volume along `axis`; `to_uint8` maps stored values to display range.

    `progress` is called with the number of slices finished after each batch.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    map_volume = np.empty(volume.shape, dtype=np.float32)
    count = volume.shape[axis]
    slice_scores = np.empty(count, dtype=np.float32)
    batch_size = predictor.config.batch_size
    for start in range(0, count, batch_size):
        indices = range(start, min(count, start + batch_size))
        slices = [to_uint8(np.take(volume, index, axis=axis).T) for index in indices]
        prediction = predictor.predict(slices)
        slice_scores[start:start + len(slices)] = prediction.scores
        for index, slice_map in zip(indices, prediction.maps):
            _slice_view(map_volume, axis, index)[...] = slice_map.T
        if progress:
            progress(len(slices))
    return VolumeResult(map_volume, slice_scores, axis)


def _slice_view(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    selector: list[slice | int] = [slice(None)] * volume.ndim
    selector[axis] = index
    return volume[tuple(selector)]
