"""The detector over one dataset of volumes: a score per volume and, per class, voxel statistics.

Each study is read, sliced and scored exactly as `medclip-ad infer` scores it (the same reader, intensity
mapping, slicing plane and volume score), so an evaluation measures what users get. Maps stay in the
volume's own voxel grid and are never kept: where a volume's ground truth is known (a normal volume, or
an anomalous one with its mask) its voxels are added to its class's `VoxelStatistics`, then dropped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from tqdm import tqdm

from medclip_ad.datasets.samples import Sample
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation.voxel_metrics import VoxelStatistics
from medclip_ad.inference.case import CaseOptions, predict_scan
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.readers import read_study
from medclip_ad.io.scan import Scan

# Largest difference between a mask's and its volume's affine, in millimetres, still taken as the same grid.
AFFINE_TOLERANCE_MM = 1e-2


@dataclass
class VolumePredictions:
    """One dataset's volume scores and map maxima, and the voxel statistics of each class that has any."""

    scores: np.ndarray
    map_max: np.ndarray
    voxels: dict[str, VoxelStatistics] = field(default_factory=dict)
    # Per class, for the volumes in `voxels`: each volume's slice labels (any mask voxel) and slice scores.
    slice_labels: dict[str, list[np.ndarray]] = field(default_factory=dict)
    slice_scores: dict[str, list[np.ndarray]] = field(default_factory=dict)


def predict_volumes(predictor: AnomalyPredictor, samples: list[Sample], options: CaseOptions, keep_voxels: bool,
                    description: str, show_progress: bool) -> VolumePredictions:
    """Score every volume as `infer` does; gather voxel statistics where the ground truth is known."""
    predictions = VolumePredictions(np.empty(len(samples), np.float32), np.empty(len(samples), np.float32))
    upper = predictor.map_range  # maps lie in [0, map_range]
    for index, sample in enumerate(tqdm(samples, desc=description, unit="volume", disable=not show_progress,
                                        leave=False, file=sys.stderr)):
        entry = sample.entry
        scan = read_study(Path(entry.img_path), options.volume_index)
        if scan.kind != "volume":
            raise UserInputError(f"{entry.img_path}: listed as a volume but holds a 2-D image")
        prediction = predict_scan(predictor, scan, options)
        predictions.scores[index] = prediction.score
        predictions.map_max[index] = prediction.map.max()
        if keep_voxels and (entry.has_mask or not entry.anomaly):
            mask = read_mask_volume(Path(entry.mask_path), scan) if entry.has_mask else np.zeros(scan.array.shape, bool)
            statistics = predictions.voxels.setdefault(entry.cls_name, VoxelStatistics(upper))
            statistics.add(prediction.map, mask)
            in_plane = tuple(axis for axis in range(3) if axis != prediction.axis)
            predictions.slice_labels.setdefault(entry.cls_name, []).append(mask.any(axis=in_plane))
            predictions.slice_scores.setdefault(entry.cls_name, []).append(prediction.slice_scores)
    return predictions


def read_mask_volume(path: Path, scan: Scan) -> np.ndarray:
    """A study's mask as booleans in its voxel grid.

    A mask stored in another axis order or direction of the same grid (as segmentation tools often
    save them) is reoriented by its affine; a mask on any other grid is refused, never resampled.
    """
    mask = read_study(path)
    array = mask.array
    if mask.affine is not None and scan.affine is not None and mask.array.ndim == 3:
        transform = ornt_transform(io_orientation(mask.affine), io_orientation(scan.affine))
        array = apply_orientation(mask.array, transform)
        affine = mask.affine @ inv_ornt_aff(transform, mask.array.shape)
        if array.shape == scan.array.shape and not np.allclose(affine, scan.affine, atol=AFFINE_TOLERANCE_MM):
            raise UserInputError(f"{path}: mask geometry (affine) differs from the volume's ({scan.source}); "
                                 f"save the mask on the volume's grid")
    if array.shape != scan.array.shape:
        raise UserInputError(f"{path}: mask shape {mask.array.shape} differs from the volume's {scan.array.shape} "
                             f"({scan.source})")
    return array > 0
