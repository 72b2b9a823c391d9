"""The detector's raw outputs over one dataset's test images, laid out so each class is one slice.

Model-size (S x S) maps are kept, as float32, only where pixel metrics can use them: for datasets with
masks, and there only for images whose ground truth is known (normal images, and anomalous ones with a
mask). Everything else keeps just its image score and map maximum.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import Sample, SampleDataset, manifest_samples
from medclip_ad.inference.predictor import AnomalyPredictor


@dataclass
class Predictions:
    """One dataset's raw outputs; `rows[i]` is image i's row in `maps`/`masks`, -1 when not kept."""

    scores: np.ndarray
    map_max: np.ndarray
    rows: np.ndarray
    maps: np.ndarray
    masks: np.ndarray


def samples_by_class(manifest: Manifest, kind: str = "image") -> list[Sample]:
    """The test samples with each class contiguous, so a class's kept maps are one slice (no copies)."""
    samples = manifest_samples([manifest], kind=kind)
    first_seen = {cls_name: rank for rank, cls_name in enumerate(dict.fromkeys(s.entry.cls_name for s in samples))}
    return sorted(samples, key=lambda sample: first_seen[sample.entry.cls_name])


def class_spans(samples: list[Sample]) -> dict[str, slice]:
    """Each class's contiguous range of samples (see `samples_by_class`)."""
    spans: dict[str, slice] = {}
    for index, sample in enumerate(samples):
        start = spans[sample.entry.cls_name].start if sample.entry.cls_name in spans else index
        spans[sample.entry.cls_name] = slice(start, index + 1)
    return spans


def kept_rows(predictions: Predictions, span: slice) -> slice | None:
    """The class's rows of the kept maps and masks (consecutive by construction), or None if it has none."""
    rows = predictions.rows[span]
    rows = rows[rows >= 0]
    return slice(int(rows[0]), int(rows[-1]) + 1) if len(rows) else None


def predict(predictor: AnomalyPredictor, samples: list[Sample], keep_pixels: bool, description: str,
            show_progress: bool) -> Predictions:
    """Scores for every image; model-size maps and masks only where the image's ground truth is known."""
    size = predictor.config.image_size
    known = np.array([keep_pixels and (sample.entry.has_mask or not sample.entry.anomaly) for sample in samples])
    rows = np.where(known, np.cumsum(known) - 1, -1)
    kept = int(known.sum())
    predictions = Predictions(scores=np.empty(len(samples), np.float32), map_max=np.empty(len(samples), np.float32),
                              rows=rows, maps=np.empty((kept, size, size), np.float32),
                              masks=np.empty((kept, size, size), np.uint8))
    loader = DataLoader(SampleDataset(samples, size), batch_size=predictor.config.batch_size, shuffle=False)
    with tqdm(total=len(samples), desc=description, unit="image", disable=not show_progress, leave=False,
              file=sys.stderr) as progress:
        for batch in loader:
            scores, maps = predictor.predict_tensor(batch["image"])
            maps = maps.float().cpu().numpy()
            index = batch["index"].numpy()
            predictions.scores[index] = scores.float().cpu().numpy()
            predictions.map_max[index] = maps.max(axis=(1, 2))
            keep = rows[index] >= 0
            predictions.maps[rows[index[keep]]] = maps[keep]
            predictions.masks[rows[index[keep]]] = batch["mask"].numpy()[keep] > 0
            progress.update(len(index))
    return predictions
