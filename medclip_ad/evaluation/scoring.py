"""Metrics from one dataset's predictions, as the reference evaluation computes them (spec section 7).

Per class: image AUROC, AP and F1-max of the image scores, defined where both labels occur; pixel AUROC,
AUPRO (reference and standard flavours), pixel AP and F1-max over all pixels of the class's kept maps and
masks pooled, defined where an anomalous pixel exists. Then the unweighted mean over classes, as the
published tables average.

For a dataset of volumes the "images" are volumes (scored by their volume score) and the "pixels" are
voxels, pooled through `VoxelStatistics`; the metric names stay the same.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import Sample
from medclip_ad.evaluation.metrics import aupro, f1_max, image_ap, image_auroc, pixel_ap, pixel_auroc, pixel_f1_max
from medclip_ad.evaluation.predictions import Predictions, class_spans, kept_rows
from medclip_ad.evaluation.results import CaseScore, ClassResult, DatasetResult, metric_labels
from medclip_ad.evaluation.volume_predictions import VolumePredictions


def score_dataset(name: str, manifest: Manifest, samples: list[Sample], scores: np.ndarray, map_max: np.ndarray,
                  pixel_metrics: dict[str, dict[str, float | None]], published: dict[str, float],
                  entries: str = "images") -> DatasetResult:
    """Per-class metrics, their mean and one row per image (or volume), for the report of one dataset.

    `pixel_metrics` holds each class's pixel (or voxel, and slice) metrics where they were computed;
    the others are None.
    """
    keys = list(metric_labels(entries))
    classes: dict[str, ClassResult] = {}
    for cls_name, span in class_spans(samples).items():
        class_entries = [sample.entry for sample in samples[span]]
        labels = np.array([entry.anomaly for entry in class_entries])
        metrics = {"image_auroc": image_auroc(labels, scores[span]), "image_ap": image_ap(labels, scores[span]),
                   "image_f1_max": f1_max(labels, scores[span])}
        metrics.update({key: (pixel_metrics.get(cls_name) or {}).get(key) for key in keys if key not in metrics})
        classes[cls_name] = ClassResult(images=len(class_entries), normal=int((labels == 0).sum()),
                                        anomalous=int(labels.sum()),
                                        with_masks=sum(entry.has_mask for entry in class_entries), metrics=metrics)
    cases = [CaseScore(cls_name=sample.entry.cls_name, image=_manifest_path(manifest, sample.entry.img_path),
                       label=sample.entry.anomaly, score=float(scores[i]), map_max=float(map_max[i]))
             for i, sample in enumerate(samples)]
    return DatasetResult(name=name, classes=classes, mean=_mean_over_classes(classes, keys), cases=cases,
                         published=published, entries=entries)


def image_pixel_metrics(samples: list[Sample], predictions: Predictions) -> dict[str, dict[str, float | None]]:
    """Pixel metrics of each class, pooled over its kept images; all None without an anomalous pixel."""
    metrics = {}
    for cls_name, span in class_spans(samples).items():
        rows = kept_rows(predictions, span)
        if rows is None or not predictions.masks[rows].any():
            continue
        masks, maps = predictions.masks[rows], predictions.maps[rows]
        metrics[cls_name] = {"pixel_auroc": pixel_auroc(masks, maps), "aupro": aupro(masks, maps, "reference"),
                             "aupro_standard": aupro(masks, maps, "standard"), "pixel_ap": pixel_ap(masks, maps),
                             "pixel_f1_max": pixel_f1_max(masks, maps)}
    return metrics


def voxel_metrics(predictions: VolumePredictions) -> dict[str, dict[str, float | None]]:
    """The pixel metrics per class over pooled voxels (under the pixel metrics' names), and the slice metrics
    over the slices of the volumes whose ground truth is known."""
    metrics: dict[str, dict[str, float | None]] = {}
    for cls_name, voxels in predictions.voxels.items():
        labels = np.concatenate(predictions.slice_labels[cls_name])
        scores = np.concatenate(predictions.slice_scores[cls_name])
        metrics[cls_name] = {"slice_auroc": image_auroc(labels, scores), "slice_ap": image_ap(labels, scores)}
        if voxels.defined:
            metrics[cls_name].update({"pixel_auroc": voxels.auroc(), "aupro": voxels.aupro("reference"),
                                      "aupro_standard": voxels.aupro("standard"),
                                      "pixel_ap": voxels.average_precision(), "pixel_f1_max": voxels.f1_max()})
    return metrics


def _mean_over_classes(classes: dict[str, ClassResult], keys: list[str]) -> dict[str, float | None]:
    """The unweighted mean over the classes where each metric is defined, as the published tables average."""
    mean: dict[str, float | None] = {}
    for metric in keys:
        values = [result.metrics[metric] for result in classes.values() if result.metrics[metric] is not None]
        mean[metric] = float(np.mean(values)) if values else None
    return mean


def _manifest_path(manifest: Manifest, absolute: str) -> str:
    """A file's path as the manifest lists it (relative to its root), so reports hold no machine paths."""
    return Path(os.path.relpath(absolute, manifest.root)).as_posix()
