"""Evaluate one detector on dataset manifests with the published protocol, and write its report.

One call evaluates one detector (a prompt checkpoint, or the `ensemble` method) on one or more manifests;
one manifest is one dataset and its classes are the entries' `cls_name`. Per class, as the reference
evaluation does (spec section 7): image AUROC, AP and F1-max of the image scores, defined where both
labels occur; pixel AUROC, AUPRO (reference and standard flavours), pixel AP and F1-max over all pixels
of the class's model-size (S x S) maps and masks pooled, defined where masks exist. Then the unweighted
mean over classes. An undefined metric is None in Python and "n/a" in every file, never 0.

Model-size maps are kept (float32) only for datasets with masks, and only for the images whose ground
truth is known: normal images, and anomalous images with a mask.

Files in `out_dir`: results.json, results.md (the published AnomalyCLIP numbers beside ours), cases.csv,
curves/<dataset>_image.png and curves/<dataset>_pixel.png (ROC and PR), examples/<dataset>/best_N.png and
worst_N.png. Every file is written atomically and results.json last, so its presence marks a finished
evaluation; an existing one is only replaced on request. Comparing several detectors means one call
each, under different `name`s.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve
from torch.utils.data import DataLoader
from tqdm import tqdm

from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import Sample, SampleDataset, manifest_samples, read_display_image, read_mask
from medclip_ad.errors import UserInputError
from medclip_ad.io.writers import atomic_write, write_json, write_png
from medclip_ad.metrics import aupro, f1_max, image_ap, image_auroc, pixel_ap, pixel_auroc, pixel_f1_max
from medclip_ad.overlay import OverlayStyle, overlay
from medclip_ad.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor, resize_map

# Metric keys of results.json (and of the published-numbers file), in report order, with their labels.
IMAGE_METRICS: dict[str, str] = {"image_auroc": "image AUROC", "image_ap": "image AP", "image_f1_max": "image F1-max"}
PIXEL_METRICS: dict[str, str] = {"pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "aupro_standard": "AUPRO (standard)",
                                 "pixel_ap": "pixel AP", "pixel_f1_max": "pixel F1-max"}
METRICS: dict[str, str] = {**IMAGE_METRICS, **PIXEL_METRICS}

NOT_AVAILABLE = "n/a"
NOT_REPORTED = "-"  # a metric the published table does not give
NOT_AVAILABLE_MEANING = (f"{NOT_AVAILABLE}: undefined for this data (image metrics need normal and anomalous images, "
                         "pixel metrics need masks)")
RESULTS_FILE = "results.json"
REPORT_FILE = "results.md"
CASES_FILE = "cases.csv"
CURVES_FOLDER = "curves"
EXAMPLES_FOLDER = "examples"
PUBLISHED_FILE = "published_anomalyclip.json"

# Anomalous images shown per side: the highest-scoring (best_N) and the lowest-scoring (worst_N).
EXAMPLES_PER_SIDE = 3
# Pixels drawn (uniformly, fixed seed) for a pixel-level curve plot; the metrics use every pixel.
CURVE_PIXELS = 200_000
CURVE_SEED = 0


@dataclass(frozen=True)
class CaseScore:
    """One evaluated image: its manifest path, label, image score and the maximum of its model-size map."""

    cls_name: str
    image: str
    label: int
    score: float
    map_max: float


@dataclass(frozen=True)
class ClassResult:
    """One class's metrics (None where undefined) and the counts they rest on."""

    images: int
    normal: int
    anomalous: int
    with_masks: int
    metrics: dict[str, float | None]

    def counts(self) -> dict[str, int]:
        return {"images": self.images, "normal": self.normal, "anomalous": self.anomalous,
                "with_masks": self.with_masks}


@dataclass
class DatasetResult:
    """One manifest's classes, their unweighted mean, the published numbers and the files drawn for it."""

    name: str
    classes: dict[str, ClassResult]
    mean: dict[str, float | None]
    cases: list[CaseScore]
    published: dict[str, float]
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    examples: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for result in self.classes.values():
            for key, value in result.counts().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def to_json(self) -> dict[str, object]:
        return {"counts": self.counts(), "mean": _json_metrics(self.mean),
                "classes": {cls_name: {"counts": result.counts(), "metrics": _json_metrics(result.metrics)}
                            for cls_name, result in self.classes.items()},
                "published_anomalyclip": self.published, "seconds": round(self.seconds, 3),
                "files": self.files, "examples": self.examples}


@dataclass
class EvaluationReport:
    """Everything one detector's evaluation found; `name` tells detectors apart when reports are compared."""

    name: str
    model: dict[str, object]
    datasets: dict[str, DatasetResult]
    timing: dict[str, float]
    out_dir: Path

    @property
    def method(self) -> str:
        return str(self.model["method"])

    @property
    def warning(self) -> str | None:
        return RANDOM_WEIGHTS_WARNING if self.model.get("random_weights") else None

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"name": self.name, "method": self.method}
        if self.warning:
            document["warning"] = self.warning
        document.update({"model": self.model, "scale": "metrics are fractions in [0, 1]; results.md shows percent",
                         "not_available": NOT_AVAILABLE_MEANING,
                         "datasets": {name: result.to_json() for name, result in self.datasets.items()},
                         "timing": self.timing})
        return document


@dataclass(frozen=True)
class PublishedNumbers:
    """A paper's table: where it comes from, and per dataset its metrics as fractions like ours."""

    source: str
    datasets: dict[str, dict[str, float]]


@dataclass
class _Predictions:
    """One dataset's raw outputs; `rows[i]` is image i's row in `maps`/`masks`, -1 when not kept."""

    scores: np.ndarray
    map_max: np.ndarray
    rows: np.ndarray
    maps: np.ndarray
    masks: np.ndarray


def published_anomalyclip() -> PublishedNumbers:
    """The published AnomalyCLIP numbers, read from the one file that states them (percent -> fractions)."""
    text = resources.files("medclip_ad.configs").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    table = json.loads(text)
    return PublishedNumbers(source=table["source"], datasets={
        dataset: {metric: round(value / 100, 6) for metric, value in metrics.items()}
        for dataset, metrics in table["datasets"].items()})


def format_percent(value: float | None) -> str:
    """A metric as printed in the tables: percent with one decimal, or "n/a" where undefined."""
    return NOT_AVAILABLE if value is None else f"{100 * value:.1f}"


def check_evaluation_inputs(manifests: list[Manifest], out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any model work, what would fail later: an existing report, volumes, missing files."""
    results = Path(out_dir) / RESULTS_FILE
    if results.exists() and not overwrite:
        raise UserInputError(f"{results}: already exists (pass --overwrite to replace it)")
    if not manifests:
        raise UserInputError("evaluation needs at least one manifest")
    for manifest in manifests:
        entries = [manifest.absolute(entry) for entry in manifest.entries("test")]
        name = manifest.dataset or "dataset"
        if not entries:
            raise UserInputError(f"{manifest.root}: the {name} manifest lists no test images")
        volumes = [entry for entry in entries if entry.kind == "volume"]
        if volumes:
            raise UserInputError(f"{volumes[0].img_path}: evaluating volume entries is not supported yet "
                                 f"(the {name} manifest lists {len(volumes)}); evaluate 2-D image manifests")
        missing = [path for entry in entries for path in (entry.img_path, entry.mask_path)
                   if path and not os.path.isfile(path)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserInputError(f"{missing[0]}: listed in the {name} manifest but not found{more}")


def evaluate(predictor: AnomalyPredictor, manifests: list[Manifest], out_dir: Path, *, name: str | None = None,
             overwrite: bool = False, show_progress: bool = True) -> EvaluationReport:
    """Evaluate `predictor` on the test split of every manifest and write the report files into `out_dir`.

    `name` labels this detector in the report (default: its method, and its prompt file if any).
    """
    out_dir = Path(out_dir)
    check_evaluation_inputs(manifests, out_dir, overwrite)
    started = time.perf_counter()
    published = published_anomalyclip()
    model = predictor.provenance()
    datasets: dict[str, DatasetResult] = {}
    inference_seconds = 0.0
    for dataset_name, manifest in zip(_dataset_names(manifests), manifests):
        samples = _samples_by_class(manifest)
        dataset_started = time.perf_counter()
        predictions = _predict(predictor, samples, keep_pixels=any(s.entry.has_mask for s in samples),
                               description=dataset_name, show_progress=show_progress)
        inference_seconds += time.perf_counter() - dataset_started
        result = _score_dataset(dataset_name, manifest, samples, predictions,
                                published.datasets.get(manifest.dataset, {}))
        result.files = _write_curves(out_dir, result, samples, predictions)
        result.examples = _write_examples(out_dir, predictor, result, samples, predictions.scores)
        result.seconds = time.perf_counter() - dataset_started
        datasets[dataset_name] = result
    images = sum(len(result.cases) for result in datasets.values())
    total_seconds = time.perf_counter() - started
    report = EvaluationReport(
        name=name or _default_name(model), model=model, datasets=datasets, out_dir=out_dir,
        timing={"images": images, "seconds": round(total_seconds, 3),
                "inference_seconds": round(inference_seconds, 3),
                "images_per_second": round(images / inference_seconds, 3),
                "end_to_end_images_per_second": round(images / total_seconds, 3)})
    _write_cases(out_dir / CASES_FILE, report)
    _write_markdown(out_dir / REPORT_FILE, report, published.source)
    write_json(out_dir / RESULTS_FILE, report.to_json())
    return report


def _default_name(model: dict[str, object]) -> str:
    prompts = model.get("prompts")
    return f"{model['method']} ({Path(str(prompts)).name})" if prompts else str(model["method"])


def _dataset_names(manifests: list[Manifest]) -> list[str]:
    """A file-name-safe, unique name per manifest: its dataset name, numbered when it repeats."""
    names: list[str] = []
    for manifest in manifests:
        base = re.sub(r"[^\w.+-]", "_", manifest.dataset or "dataset")
        candidate, number = base, 1
        while candidate in names:
            number += 1
            candidate = f"{base}_{number}"
        names.append(candidate)
    return names


def _samples_by_class(manifest: Manifest) -> list[Sample]:
    """The test samples with each class contiguous, so a class's kept maps are one slice (no copies)."""
    samples = manifest_samples([manifest])
    first_seen = {cls_name: rank for rank, cls_name in enumerate(dict.fromkeys(s.entry.cls_name for s in samples))}
    return sorted(samples, key=lambda sample: first_seen[sample.entry.cls_name])


def _predict(predictor: AnomalyPredictor, samples: list[Sample], keep_pixels: bool, description: str,
             show_progress: bool) -> _Predictions:
    """Scores for every image; model-size maps and masks only where the image's ground truth is known."""
    size = predictor.config.image_size
    known = np.array([keep_pixels and (sample.entry.has_mask or not sample.entry.anomaly) for sample in samples])
    rows = np.where(known, np.cumsum(known) - 1, -1)
    kept = int(known.sum())
    predictions = _Predictions(scores=np.empty(len(samples), np.float32), map_max=np.empty(len(samples), np.float32),
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


def _score_dataset(name: str, manifest: Manifest, samples: list[Sample], predictions: _Predictions,
                   published: dict[str, float]) -> DatasetResult:
    classes: dict[str, ClassResult] = {}
    for cls_name, span in _class_spans(samples).items():
        entries = [sample.entry for sample in samples[span]]
        labels = np.array([entry.anomaly for entry in entries])
        metrics = {"image_auroc": image_auroc(labels, predictions.scores[span]),
                   "image_ap": image_ap(labels, predictions.scores[span]),
                   "image_f1_max": f1_max(labels, predictions.scores[span])}
        metrics.update(_pixel_metrics(predictions, span))
        classes[cls_name] = ClassResult(images=len(entries), normal=int((labels == 0).sum()),
                                        anomalous=int(labels.sum()),
                                        with_masks=sum(entry.has_mask for entry in entries), metrics=metrics)
    cases = [CaseScore(cls_name=sample.entry.cls_name, image=_manifest_path(manifest, sample.entry.img_path),
                       label=sample.entry.anomaly, score=float(predictions.scores[i]),
                       map_max=float(predictions.map_max[i])) for i, sample in enumerate(samples)]
    return DatasetResult(name=name, classes=classes, mean=_mean_over_classes(classes), cases=cases,
                         published=published)


def _class_spans(samples: list[Sample]) -> dict[str, slice]:
    """Each class's contiguous range of samples (see `_samples_by_class`)."""
    spans: dict[str, slice] = {}
    for index, sample in enumerate(samples):
        start = spans[sample.entry.cls_name].start if sample.entry.cls_name in spans else index
        spans[sample.entry.cls_name] = slice(start, index + 1)
    return spans


def _kept_rows(predictions: _Predictions, span: slice) -> slice | None:
    """The class's rows of the kept maps and masks (consecutive by construction), or None if it has none."""
    rows = predictions.rows[span]
    rows = rows[rows >= 0]
    return slice(int(rows[0]), int(rows[-1]) + 1) if len(rows) else None


def _pixel_metrics(predictions: _Predictions, span: slice) -> dict[str, float | None]:
    """Pixel metrics of one class, pooled over its kept images; all None without an anomalous pixel."""
    rows = _kept_rows(predictions, span)
    if rows is None or not predictions.masks[rows].any():
        return dict.fromkeys(PIXEL_METRICS)
    masks, maps = predictions.masks[rows], predictions.maps[rows]
    return {"pixel_auroc": pixel_auroc(masks, maps), "aupro": aupro(masks, maps, "reference"),
            "aupro_standard": aupro(masks, maps, "standard"), "pixel_ap": pixel_ap(masks, maps),
            "pixel_f1_max": pixel_f1_max(masks, maps)}


def _mean_over_classes(classes: dict[str, ClassResult]) -> dict[str, float | None]:
    """The unweighted mean over the classes where each metric is defined, as the published tables average."""
    mean: dict[str, float | None] = {}
    for metric in METRICS:
        values = [result.metrics[metric] for result in classes.values() if result.metrics[metric] is not None]
        mean[metric] = float(np.mean(values)) if values else None
    return mean


def _json_metrics(metrics: dict[str, float | None]) -> dict[str, float | str]:
    return {metric: NOT_AVAILABLE if value is None else value for metric, value in metrics.items()}


def _manifest_path(manifest: Manifest, absolute: str) -> str:
    """A file's path as the manifest lists it (relative to its root), so reports hold no machine paths."""
    return Path(os.path.relpath(absolute, manifest.root)).as_posix()


def _write_curves(out_dir: Path, result: DatasetResult, samples: list[Sample], predictions: _Predictions) -> list[str]:
    """ROC and PR curves per class: image-level where image AUROC is defined, pixel-level likewise."""
    spans = _class_spans(samples)
    image_curves, pixel_curves = {}, {}
    rng = np.random.default_rng(CURVE_SEED)
    for cls_name, span in spans.items():
        metrics = result.classes[cls_name].metrics
        if metrics["image_auroc"] is not None:
            image_curves[cls_name] = (np.array([s.entry.anomaly for s in samples[span]]), predictions.scores[span])
        rows = _kept_rows(predictions, span)
        if rows is None or metrics["pixel_auroc"] is None:
            continue
        masks, maps = predictions.masks[rows].reshape(-1), predictions.maps[rows].reshape(-1)
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


def _write_examples(out_dir: Path, predictor: AnomalyPredictor, result: DatasetResult, samples: list[Sample],
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
    style = OverlayStyle(vmax=float(len(predictor.config.layers)))
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


def _mask_panel(mask_path: str, shape: tuple[int, int], predictor: AnomalyPredictor) -> np.ndarray:
    """The ground truth as the evaluation saw it (model-size binary mask), drawn white on black in the image grid."""
    mask = resize_map(read_mask(mask_path, predictor.config.image_size), shape).numpy() > 0.5
    return np.repeat((mask * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _write_cases(path: Path, report: EvaluationReport) -> None:
    with atomic_write(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "class", "image", "label", "score", "map_max"])
        for dataset, result in report.datasets.items():
            for case in result.cases:
                writer.writerow([dataset, case.cls_name, case.image, case.label, f"{case.score:.6f}",
                                 f"{case.map_max:.6f}"])


def _write_markdown(path: Path, report: EvaluationReport, published_source: str) -> None:
    """Per dataset: our mean metrics beside the published AnomalyCLIP ones; per class too where there are several."""
    model = report.model
    lines = [f"# Evaluation: {report.name}", ""]
    if report.warning:
        lines += [f"> **WARNING: {report.warning}**", ""]
    lines += [f"Model: method `{model['method']}`, backbone {model['backbone']}, CLIP weights "
              f"`{model['clip_weights']}`, prompts `{model['prompts'] or 'none'}`, layers {model['layers']}, "
              f"image size {model['image_size']}, precision {model['precision']}, "
              f"medclip-ad {model['package_version']}.", "",
              f"Metrics in percent, averaged over classes without weights. {NOT_AVAILABLE_MEANING}. "
              f"Published: {published_source}; {NOT_REPORTED}: not reported.", "",
              f"{report.timing['images']} images, {report.timing['images_per_second']:.2f} images/s "
              f"({report.timing['seconds']:.1f} s in all).", ""]
    for name, result in report.datasets.items():
        counts = result.counts()
        lines += [f"## {name}", "", f"{counts['images']} images: {counts['normal']} normal, {counts['anomalous']} "
                  f"anomalous, {counts['with_masks']} with masks; {len(result.classes)} class(es).", "",
                  "| metric | ours | published AnomalyCLIP |", "|---|---:|---:|"]
        for metric, label in METRICS.items():
            theirs = format_percent(result.published[metric]) if metric in result.published else NOT_REPORTED
            lines.append(f"| {label} | {format_percent(result.mean[metric])} | {theirs} |")
        if len(result.classes) > 1:
            lines += ["", "| class | images | " + " | ".join(METRICS.values()) + " |",
                      "|---|---:|" + "---:|" * len(METRICS)]
            for cls_name, class_result in result.classes.items():
                values = " | ".join(format_percent(class_result.metrics[metric]) for metric in METRICS)
                lines.append(f"| {cls_name} | {class_result.images} | {values} |")
        lines.append("")
    with atomic_write(path) as temporary:
        temporary.write_text("\n".join(lines), encoding="utf-8")
