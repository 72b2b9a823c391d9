"""What an evaluation found, as data: metric names, per-class and per-dataset results, the whole report.

An undefined metric is None here and "n/a" in every file, never 0, so a reader cannot mistake "could not
be measured" for "measured as zero".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING

# Metric keys of results.json (and of the published-numbers file), in report order, with their labels.
IMAGE_METRICS: dict[str, str] = {"image_auroc": "image AUROC", "image_ap": "image AP", "image_f1_max": "image F1-max"}
PIXEL_METRICS: dict[str, str] = {"pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "aupro_standard": "AUPRO (standard)",
                                 "pixel_ap": "pixel AP", "pixel_f1_max": "pixel F1-max"}
METRICS: dict[str, str] = {**IMAGE_METRICS, **PIXEL_METRICS}
# Volume datasets also rank slices: a slice is anomalous where its mask has a voxel (along the scored axis).
SLICE_METRICS: dict[str, str] = {"slice_auroc": "slice AUROC", "slice_ap": "slice AP"}


def metric_labels(entries: str) -> dict[str, str]:
    """The metrics a dataset of `entries` ("images" or "volumes") reports, in report order."""
    return {**METRICS, **SLICE_METRICS} if entries == "volumes" else METRICS

NOT_AVAILABLE = "n/a"
NOT_AVAILABLE_MEANING = (f"{NOT_AVAILABLE}: undefined for this data (image metrics need normal and anomalous images, "
                         "pixel metrics need masks)")


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
        """The image counts, so a reader can judge how much a metric rests on."""
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
    entries: str = "images"  # or "volumes": then image metrics are per volume and pixel metrics per voxel
    operating_points: list[dict] = field(default_factory=list)  # with a calibration: rates at its thresholds

    @property
    def metric_labels(self) -> dict[str, str]:
        return metric_labels(self.entries)

    def counts(self) -> dict[str, int]:
        """The image counts summed over classes."""
        totals: dict[str, int] = {}
        for result in self.classes.values():
            for key, value in result.counts().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def to_json(self) -> dict[str, object]:
        """This dataset's part of results.json."""
        return {"entries": self.entries, "counts": self.counts(), "mean": json_metrics(self.mean),
                "classes": {cls_name: {"counts": result.counts(), "metrics": json_metrics(result.metrics)}
                            for cls_name, result in self.classes.items()},
                "published_anomalyclip": self.published, "seconds": round(self.seconds, 3),
                "files": self.files, "examples": self.examples,
                **({"operating_points": self.operating_points} if self.operating_points else {})}


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
        """The whole of results.json."""
        document: dict[str, object] = {"name": self.name, "method": self.method}
        if self.warning:
            document["warning"] = self.warning
        document.update({"model": self.model, "scale": "metrics are fractions in [0, 1]; results.md shows percent",
                         "not_available": NOT_AVAILABLE_MEANING,
                         "datasets": {name: result.to_json() for name, result in self.datasets.items()},
                         "timing": self.timing})
        return document


def json_metrics(metrics: dict[str, float | None]) -> dict[str, float | str]:
    """Metrics as results.json writes them: undefined ones as "n/a", the word every report file uses."""
    return {metric: NOT_AVAILABLE if value is None else value for metric, value in metrics.items()}


def format_percent(value: float | None) -> str:
    """A metric as printed in the tables: percent with one decimal, or "n/a" where undefined."""
    return NOT_AVAILABLE if value is None else f"{100 * value:.1f}"
