"""Evaluate several detectors on the same manifests and put them side by side in one table.

A detector is a method plus its checkpoint where it needs one (`ensemble`, `anomalyclip:prompts.safetensors`,
`rwda:rwda_head.safetensors`). Each is evaluated exactly as `medclip-ad evaluate` evaluates one detector,
into its own numbered sub-folder of the output folder (its full report stays there); the backbone is
loaded once and shared. Then `comparison.json` and `comparison.md` hold one row per detector with its
mean metrics per dataset, and the published AnomalyCLIP numbers where the paper gives them. The table
shows the metrics the published tables report; the JSON keeps every metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation import (
    METRICS,
    NOT_AVAILABLE,
    REPORT_FILE,
    RESULTS_FILE,
    EvaluationReport,
    evaluate,
    format_percent,
    published_anomalyclip,
)
from medclip_ad.evaluation.report import NOT_REPORTED
from medclip_ad.inference.case import CaseOptions
from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor
from medclip_ad.io.writers import atomic_write, write_json
from medclip_ad.methods.registry import METHOD_NAMES, load_backbone
from medclip_ad.output_files import COMPARISON_MARKDOWN

COMPARISON_JSON = "comparison.json"
PUBLISHED_ROW = "AnomalyCLIP (published)"


@dataclass(frozen=True)
class ComparedDetector:
    """One row of a comparison: a method and, for methods that load one, its checkpoint."""

    method: str
    checkpoint: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ComparedDetector:
        """`METHOD` or `METHOD:CHECKPOINT`, as the command line spells a detector."""
        method, _, checkpoint = spec.partition(":")
        if method not in METHOD_NAMES:
            raise UserInputError(f"--compare {spec}: unknown method {method!r} (choose from {', '.join(METHOD_NAMES)}; "
                                 f"write METHOD or METHOD:CHECKPOINT)")
        return cls(method, checkpoint or None)

    @property
    def name(self) -> str:
        """The row label: the detector as the user wrote it, which is unique within a comparison."""
        return f"{self.method}:{self.checkpoint}" if self.checkpoint else self.method

    def folder(self, index: int) -> str:
        """Sub-folder of its report: numbered in command-line order, readable, file-name safe."""
        stem = f"{self.method}_{Path(self.checkpoint).stem}" if self.checkpoint else self.method
        return f"{index:02d}_" + re.sub(r"[^\w.+-]", "_", stem)


@dataclass
class Comparison:
    """The compared detectors' reports, in the order given, and where the comparison was written."""

    detectors: list[ComparedDetector]
    reports: list[EvaluationReport]
    out_dir: Path

    @property
    def markdown_path(self) -> Path:
        return self.out_dir / COMPARISON_MARKDOWN

    @property
    def random_weights(self) -> bool:
        return any(report.warning for report in self.reports)


def compare_detectors(detectors: Sequence[ComparedDetector], base: DetectorConfig, manifests: list[Manifest],
                      out_dir: Path, overwrite: bool = False, show_progress: bool = True,
                      volume_options: CaseOptions = CaseOptions()) -> Comparison:
    """Evaluate every detector on `manifests` with `base`'s backbone and settings; write the comparison files."""
    out_dir = Path(out_dir)
    detectors = list(detectors)
    _check_request(detectors, out_dir, overwrite)
    backbone = load_backbone(base)
    reports = []
    for index, detector in enumerate(detectors, start=1):
        predictor = AnomalyPredictor(replace(base, method=detector.method, prompts=detector.checkpoint), backbone)
        reports.append(evaluate(predictor, manifests, out_dir / detector.folder(index), name=detector.name,
                                overwrite=overwrite, show_progress=show_progress, volume_options=volume_options))
    comparison = Comparison(detectors, reports, out_dir)
    with atomic_write(comparison.markdown_path) as temporary:
        temporary.write_text(comparison_markdown(comparison), encoding="utf-8")
    write_json(out_dir / COMPARISON_JSON, comparison_json(comparison))
    return comparison


def comparison_json(comparison: Comparison) -> dict[str, object]:
    """comparison.json: per detector its provenance, report folder and mean metrics (fractions) per dataset."""
    rows = []
    for index, (detector, report) in enumerate(zip(comparison.detectors, comparison.reports), start=1):
        document = report.to_json()
        rows.append({"name": detector.name, "method": detector.method, "checkpoint": detector.checkpoint,
                     "checkpoint_sha256": report.model.get("prompts_sha256"),
                     "report": f"{detector.folder(index)}/{RESULTS_FILE}", "model": report.model,
                     "datasets": {name: {"counts": dataset["counts"], "mean": dataset["mean"]}
                                  for name, dataset in document["datasets"].items()}})
    published = published_anomalyclip()
    result: dict[str, object] = {}
    if comparison.random_weights:
        result["warning"] = RANDOM_WEIGHTS_WARNING
    result.update({"scale": "metrics are fractions in [0, 1]; comparison.md shows percent",
                   "not_available": f"{NOT_AVAILABLE}: undefined for this data (see each report)",
                   "table_metrics": _table_metrics(), "detectors": rows,
                   "published": {"source": published.source, "datasets": {
                       name: _published(comparison, name) for name in _dataset_names(comparison)}}})
    return result


def comparison_markdown(comparison: Comparison) -> str:
    """comparison.md: one table per dataset, one row per detector, mean metrics over classes in percent."""
    metrics = _table_metrics()
    published = published_anomalyclip()
    lines = ["# Detector comparison", ""]
    if comparison.random_weights:
        lines += [f"> **{RANDOM_WEIGHTS_WARNING}**", ""]
    lines += [f"Mean over classes, in percent; {NOT_AVAILABLE}: undefined for this data; {NOT_REPORTED}: not "
              "published. Each detector's full report (per class, curves, examples) is in its folder.", ""]
    header = ["detector", *metrics.values(), "report"]
    for name in _dataset_names(comparison):
        dataset = comparison.reports[0].datasets[name]
        lines += [f"## {name} ({dataset.counts()['images']} {dataset.entries})", "", _row(header),
                  _row(["---"] * len(header))]
        for index, (detector, report) in enumerate(zip(comparison.detectors, comparison.reports), start=1):
            mean = report.datasets[name].mean
            link = f"[{REPORT_FILE}]({detector.folder(index)}/{REPORT_FILE})"
            lines.append(_row([f"`{detector.name}`", *(format_percent(mean.get(m)) for m in metrics), link]))
        paper = _published(comparison, name)
        if paper:
            theirs = (format_percent(paper[m]) if m in paper else NOT_REPORTED for m in metrics)
            lines.append(_row([PUBLISHED_ROW, *theirs, "paper"]))
        lines.append("")
    lines.append(f"{PUBLISHED_ROW}: {published.source}.")
    return "\n".join(lines) + "\n"


def _check_request(detectors: list[ComparedDetector], out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any model loads, what would fail part-way: nothing to compare, repeats, missing files."""
    if not detectors:
        raise UserInputError("--compare: name at least one detector (METHOD or METHOD:CHECKPOINT)")
    names = [detector.name for detector in detectors]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserInputError(f"--compare: {repeated[0]} is listed twice")
    for detector in detectors:
        if detector.checkpoint and not Path(detector.checkpoint).is_file():
            raise UserInputError(f"{detector.checkpoint}: checkpoint of --compare {detector.name} not found")
    existing = [out_dir / COMPARISON_JSON] + [out_dir / d.folder(i) / RESULTS_FILE for i, d in enumerate(detectors, 1)]
    found = [path for path in existing if path.exists()]
    if found and not overwrite:
        raise UserInputError(f"{found[0]}: already exists (pass --overwrite to replace it)")


def _table_metrics() -> dict[str, str]:
    """The metrics the published tables report, in report order: what the comparison table shows."""
    published = published_anomalyclip().datasets.values()
    return {key: label for key, label in METRICS.items() if any(key in numbers for numbers in published)}


def _dataset_names(comparison: Comparison) -> list[str]:
    return list(comparison.reports[0].datasets)


def _published(comparison: Comparison, name: str) -> dict[str, float]:
    """The paper's numbers for one dataset of the comparison (as every report of it carries them)."""
    return comparison.reports[0].datasets[name].published


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
