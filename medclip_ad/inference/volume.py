"""Slice-wise inference on 3-D scans: the 2-D detector over every slice along one axis, batched.

Slices are read, mapped to 8 bits and scored a batch at a time, so memory beyond the input and the
output volume stays bounded by the batch size, whatever the number of slices; a reader thread prepares
the next batch while the model scores the current one. Each slice
reaches the model in radiological orientation (`medclip_ad.io.orientation`: the picture the viewer shows, whatever
the storage order) and its map is put back into the scan's own voxel grid, so the map volume has
exactly the input's shape and geometry and the same study stored in any order gets the same scores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from medclip_ad.config import AGGREGATIONS
from medclip_ad.inference.predictor import AnomalyPredictor, PreparedBatch
from medclip_ad.io.orientation import PlaneLayout, extract_slice, insert_slice


def _prepared_batches(read: Callable[[range], PreparedBatch],
                      batches: list[range]) -> Iterator[tuple[range, PreparedBatch]]:
    """Each batch's slice indices and prepared images, in order, read by a reader thread one batch ahead.

    `read` runs numpy and PIL only (`AnomalyPredictor.prepare`), which release the GIL and start no OpenMP
    team of their own, so the reader costs the model little even where its threads fill every core
    (1.06x-1.21x the batches read in turn, 2 cores at 2 threads; benchmarks/bench_volume.py, README
    Performance).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slice-reader") as reader:
        pending = reader.submit(read, batches[0]) if batches else None
        for number, indices in enumerate(batches):
            batch = pending.result()
            if number + 1 < len(batches):
                pending = reader.submit(read, batches[number + 1])
            yield indices, batch


@dataclass
class VolumeResult:
    """The map volume (the input's shape, float32) and one image score per slice along `axis`."""

    map_volume: np.ndarray
    slice_scores: np.ndarray
    axis: int


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


def infer_volume(predictor: AnomalyPredictor, volume: np.ndarray, layout: PlaneLayout,
                 to_uint8: Callable[[np.ndarray], np.ndarray],
                 progress: Callable[[int], None] | None = None) -> VolumeResult:
    """Score every slice of a (I, J, K) volume along `layout.slice_axis`, each laid out by `layout`;
    `to_uint8` maps stored values to display range.

    `progress` is called with the number of slices finished after each batch.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    map_volume = np.empty(volume.shape, dtype=np.float32)
    count = volume.shape[layout.slice_axis]
    slice_scores = np.empty(count, dtype=np.float32)
    batch_size = predictor.config.batch_size
    batches = [range(start, min(count, start + batch_size)) for start in range(0, count, batch_size)]

    def read(indices: range) -> PreparedBatch:
        return predictor.prepare([to_uint8(extract_slice(volume, layout, index)) for index in indices])

    for indices, batch in _prepared_batches(read, batches):
        prediction = predictor.predict_prepared(batch)
        slice_scores[indices.start:indices.stop] = prediction.scores
        for index, slice_map in zip(indices, prediction.maps):
            insert_slice(map_volume, layout, index, slice_map)
        if progress:
            progress(len(indices))
    return VolumeResult(map_volume, slice_scores, layout.slice_axis)
