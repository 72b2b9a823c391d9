"""The report's pictures: ROC and PR curves per dataset, and overlays of its best- and worst-scored cases.

Files, relative to the report folder: curves/<dataset>_image.png and curves/<dataset>_pixel.png,
examples/<dataset>/best_N.png and worst_N.png. Each is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from medclip_ad.datasets.samples import Sample, read_display_image, read_mask
from medclip_ad.evaluation.predictions import Predictions, class_spans, kept_rows
from medclip_ad.evaluation.results import DatasetResult, format_percent
from medclip_ad.inference.overlay import OverlayStyle, overlay
from medclip_ad.inference.predictor import AnomalyPredictor, resize_map
from medclip_ad.io.writers import atomic_write, write_png

CURVES_FOLDER = "curves"
EXAMPLES_FOLDER = "examples"
# Anomalous images shown per side: the highest-scoring (best_N) and the lowest-scoring (worst_N).
EXAMPLES_PER_SIDE = 3
# Pixels drawn (uniformly, fixed seed) for a pixel-level curve plot; the metrics use every pixel.
CURVE_PIXELS = 200_000
CURVE_SEED = 0


def write_curves(out_dir: Path, result: DatasetResult, samples: list[Sample], scores: np.ndarray,
                 pixels: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """ROC and PR curves per class: image-level where image AUROC is defined, pixel-level from `pixels`.

    `pixels` holds per class the (labels, map values) drawn for plotting (`image_curve_pixels`, or a
    volume dataset's voxel sample). Returns the written files relative to `out_dir`, for the report.
    """
    image_curves, pixel_curves = {}, {}
    rng = np.random.default_rng(CURVE_SEED)
    for cls_name, span in class_spans(samples).items():
        metrics = result.classes[cls_name].metrics
        if metrics["image_auroc"] is not None:
            image_curves[cls_name] = (np.array([s.entry.anomaly for s in samples[span]]), scores[span])
        if cls_name not in pixels or metrics["pixel_auroc"] is None:
            continue
        masks, maps = pixels[cls_name]
        if masks.size > CURVE_PIXELS:
            drawn = rng.integers(0, masks.size, size=CURVE_PIXELS)
            masks, maps = masks[drawn], maps[drawn]
        if 0 < masks.sum() < masks.size:
            pixel_curves[cls_name] = (masks, maps)
    written = []
    if image_curves:
        written.append(_plot_curves(out_dir, result, "image", image_curves, ""))
    if pixel_curves:
        written.append(_plot_curves(out_dir, result, "pixel", pixel_curves,
                                    f" (drawn from at most {CURVE_PIXELS} random pixels per class)"))
    return written


def image_curve_pixels(samples: list[Sample], predictions: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each class's kept masks and maps, flattened (views, no copies), for `write_curves` to draw from."""
    pixels = {}
    for cls_name, span in class_spans(samples).items():
        rows = kept_rows(predictions, span)
        if rows is not None:
            pixels[cls_name] = (predictions.masks[rows].reshape(-1), predictions.maps[rows].reshape(-1))
    return pixels


def write_examples(out_dir: Path, predictor: AnomalyPredictor, result: DatasetResult, samples: list[Sample],
                   scores: np.ndarray) -> dict[str, list[dict[str, object]]]:
    """Overlays of the highest- and lowest-scoring anomalous images, with the mask beside where there is one.

    The few maps are predicted again in each image's own grid (as `infer` writes them) rather than kept.
    """
    anomalous = np.flatnonzero([sample.entry.anomaly for sample in samples])
    ranked = anomalous[np.argsort(-scores[anomalous], kind="stable")]
    best = ranked[:min(EXAMPLES_PER_SIDE, (len(ranked) + 1) // 2)]  # few images: split them, never show one twice
    worst = ranked[::-1][:min(EXAMPLES_PER_SIDE, len(ranked) // 2)]
    picks = [(side, rank, index) for side, chosen in (("best", best), ("worst", worst))
             for rank, index in enumerate(chosen, start=1)]
    images = [read_display_image(Path(samples[index].entry.img_path)) for _, _, index in picks]
    maps = predictor.predict(images).maps
    style = OverlayStyle(vmax=predictor.map_range)
    examples: dict[str, list[dict[str, object]]] = {"best": [], "worst": []}
    for (side, rank, index), image, image_map in zip(picks, images, maps):
        entry = samples[index].entry
        panel = overlay(image, image_map, style)
        if entry.has_mask:
            panel = np.concatenate([panel, _mask_panel(entry.mask_path, image.shape[:2], predictor)], axis=1)
        path = out_dir / EXAMPLES_FOLDER / result.name / f"{side}_{rank}.png"
        write_png(path, panel)
        examples[side].append({"file": path.relative_to(out_dir).as_posix(), "image": result.cases[index].image,
                               "class": entry.cls_name, "score": float(scores[index])})
    return examples


def _plot_curves(out_dir: Path, result: DatasetResult, level: str, curves: dict[str, tuple[np.ndarray, np.ndarray]],
                 note: str) -> str:
    """One PNG with ROC (left) and PR (right), a line per class labelled with its metric on all the data."""
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    roc_axes, pr_axes = figure.subplots(1, 2)
    for cls_name, (labels, scores) in curves.items():
        metrics = result.classes[cls_name].metrics
        false_positive, true_positive, _ = roc_curve(labels, scores)
        precision, recall, _ = precision_recall_curve(labels, scores)
        roc_axes.plot(false_positive, true_positive,
                      label=f"{cls_name} (AUROC {format_percent(metrics[f'{level}_auroc'])})")
        pr_axes.plot(recall, precision, label=f"{cls_name} (AP {format_percent(metrics[f'{level}_ap'])})")
    roc_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    pr_axes.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    roc_axes.legend(loc="lower right", fontsize="small")
    pr_axes.legend(loc="lower left", fontsize="small")
    figure.suptitle(f"{result.name}: {level} level{note}")
    path = out_dir / CURVES_FOLDER / f"{result.name}_{level}.png"
    with atomic_write(path) as temporary:
        figure.savefig(temporary, dpi=100)
    return path.relative_to(out_dir).as_posix()


def _mask_panel(mask_path: str, shape: tuple[int, int], predictor: AnomalyPredictor) -> np.ndarray:
    """The ground truth as the evaluation saw it (model-size binary mask), drawn white on black in the image grid."""
    mask = resize_map(read_mask(mask_path, predictor.config.image_size), shape).numpy() > 0.5
    return np.repeat((mask * 255).astype(np.uint8)[:, :, None], 3, axis=2)
