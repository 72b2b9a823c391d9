"""Fit a calibration: score the normal studies exactly as `infer` scores them, then fit the thresholds.

Normals are read and scored one at a time; only their scores and a histogram of their map values are
kept, so any number of CT series fits in memory. A normal that cannot be read is reported and left out
(the calibration records exactly which studies it was fitted on).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from medclip_ad.config import CALIBRATION_CONFIDENCE, PIXEL_PERCENTILE
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation.voxel_metrics import VoxelStatistics
from medclip_ad.inference.calibration import (
    Calibration,
    case_scoring,
    fit_operating_point,
    normals_needed,
    study_sha256,
    too_few_normals,
    with_article,
)
from medclip_ad.inference.case import CaseOptions, predict_scan
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.scan import Scan


def check_enough_normals(count: int, fprs: Iterable[float]) -> None:
    """Refuse, before any model work, a set of normals too small for the rarest requested FPR."""
    for fpr in sorted(fprs):
        if count < normals_needed(fpr):
            raise too_few_normals(fpr, count)


def fit_calibration(predictor: AnomalyPredictor, scans: Iterable[Callable[[], Scan]], options: CaseOptions,
                    fprs: Iterable[float], *, pixel_percentile: float = PIXEL_PERCENTILE,
                    confidence: float = CALIBRATION_CONFIDENCE, failures: list[str] | None = None) -> Calibration:
    """Score each normal (`scans` yields readers, so a bad file fails alone) and fit the operating points.

    A normal that raises `UserInputError` adds its line to `failures` and is left out.
    """
    fprs = sorted(set(fprs))
    if not 0.0 < pixel_percentile < 100.0:
        raise UserInputError(f"--pixel-percentile {pixel_percentile:g}: must lie strictly between 0 and 100")
    if not 0.0 < confidence < 1.0:
        raise UserInputError(f"--confidence {confidence:g}: must lie strictly between 0 and 1")
    voxels = VoxelStatistics(predictor.map_range)
    scores: list[float] = []
    studies: list[dict] = []
    kind = None
    for read in scans:
        try:
            scan = read()
            if kind is not None and scan.kind != kind:
                raise UserInputError(f"{scan.source}: is {with_article(scan.kind)} but the first normal was "
                                     f"{with_article(kind)}; calibrate images and volumes separately")
            prediction = predict_scan(predictor, scan, options)
        except UserInputError as error:
            if failures is None:
                raise
            failures.append(str(error))
            continue
        kind = scan.kind
        scores.append(prediction.score)
        voxels.add(prediction.map, np.zeros(prediction.map.shape, dtype=bool))
        studies.append({"case": scan.name, "input": str(scan.source), "sha256": _study_hash(scan)})
    if kind is None:
        raise UserInputError("no normal could be scored")
    check_enough_normals(len(scores), fprs)
    points = [fit_operating_point(scores, fpr, confidence) for fpr in fprs]
    return Calibration(model=predictor.provenance(), scoring=case_scoring(kind, options), normal_scores=scores,
                       normals=studies, operating_points=points, pixel_percentile=pixel_percentile,
                       pixel_threshold=voxels.normal_percentile(pixel_percentile), confidence=confidence)


def _study_hash(scan: Scan) -> str:
    files = scan.metadata.get("files") or [scan.source]
    return study_sha256([Path(f) for f in files])
