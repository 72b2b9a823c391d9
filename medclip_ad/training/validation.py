"""Held-out validation after every epoch (`train --val-manifest`), to keep the best epoch beside the last.

Each epoch checkpoint is loaded as `infer` and `evaluate` would load it (the same predictor, on the
run's backbone) and scored on the manifest's test split with the metric its method declares, pooled
over the split: the reference AdaCLIP keeps the epoch of best pixel F1-max this way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation.metrics import f1_max, image_auroc, pixel_auroc, pixel_f1_max
from medclip_ad.evaluation.predictions import Predictions, predict, samples_by_class
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.modeling.clip_backbone import ClipBackbone

# Each metric: (image labels, predictions) -> a value where higher is better, or None when undefined.
VALIDATION_METRICS: dict[str, Callable[[np.ndarray, Predictions], float | None]] = {
    "image_auroc": lambda labels, predictions: image_auroc(labels, predictions.scores),
    "image_f1_max": lambda labels, predictions: f1_max(labels, predictions.scores),
    "pixel_auroc": lambda labels, predictions: pixel_auroc(predictions.masks, predictions.maps),
    "pixel_f1_max": lambda labels, predictions: pixel_f1_max(predictions.masks, predictions.maps),
}


@dataclass
class Validation:
    """Scores epoch checkpoints of one method on one held-out manifest; remembers the best so far."""

    detector: DetectorConfig
    backbone: ClipBackbone
    manifest: Manifest
    metric: str
    best: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in VALIDATION_METRICS:
            raise ValueError(f"unknown validation metric {self.metric}")
        self.samples = samples_by_class(self.manifest)
        if not self.samples:
            raise UserInputError(f"--val-manifest {self.manifest.root}: lists no test images")
        self.labels = np.array([int(sample.entry.anomaly) for sample in self.samples])
        if self.metric.startswith("pixel") and not any(sample.entry.has_mask for sample in self.samples):
            raise UserInputError(f"--val-manifest {self.manifest.root}: has no masks, and {self.detector.method} "
                                 f"validates with {self.metric}")
        if len(set(self.labels.tolist())) < 2:
            raise UserInputError(f"--val-manifest {self.manifest.root}: needs both normal and anomalous images")

    def score(self, checkpoint: Path) -> float | None:
        """The metric of `checkpoint` on the held-out split."""
        config = dataclasses.replace(self.detector, prompts=str(checkpoint))
        predictor = AnomalyPredictor(config, backbone=self.backbone)
        predictions = predict(predictor, self.samples, keep_pixels=True, description="validation",
                              show_progress=False)
        return VALIDATION_METRICS[self.metric](self.labels, predictions)

    def is_best(self, score: float | None) -> bool:
        """Whether `score` beats every earlier epoch's (the first defined score always does)."""
        if score is None or (self.best is not None and score <= self.best):
            return False
        self.best = score
        return True

    def describe(self, score: float | None) -> str:
        return f"validation {self.metric} {'n/a' if score is None else f'{score:.4f}'}"
