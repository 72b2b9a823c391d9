"""The report files: results.json, results.md (published AnomalyCLIP numbers beside ours) and cases.csv.

Every file is written atomically, and `write_report` writes results.json last, so its presence marks a
finished evaluation.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medclip_ad.evaluation.operating_points import markdown_rows
from medclip_ad.evaluation.results import NOT_AVAILABLE_MEANING, EvaluationReport, format_percent
from medclip_ad.io.writers import atomic_write, write_json
from medclip_ad.output_files import REPORT_FILE, RESULTS_FILE

CASES_FILE = "cases.csv"
NOT_REPORTED = "-"  # a metric the published table does not give

VOLUME_METRICS_NOTE = ("Volumes: the image metrics rank volumes by their volume score (as `infer` computes it), the "
                       "pixel metrics pool voxels in each volume's own grid (AUPRO regions are 3-D, 26-connected), "
                       "and the slice metrics rank the scored slices (anomalous: a mask voxel in the slice).")

def write_report(out_dir: Path, report: EvaluationReport, published_source: str) -> None:
    """All three report files, results.json last so that a half-written report is never taken as finished."""
    _write_cases(out_dir / CASES_FILE, report)
    _write_markdown(out_dir / REPORT_FILE, report, published_source)
    write_json(out_dir / RESULTS_FILE, report.to_json())


def _write_cases(path: Path, report: EvaluationReport) -> None:
    """One row per image with its score, for looking up single cases or recomputing metrics elsewhere."""
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
        lines += [f"## {name}", "", f"{counts['images']} {result.entries}: {counts['normal']} normal, "
                  f"{counts['anomalous']} anomalous, {counts['with_masks']} with masks; "
                  f"{len(result.classes)} class(es).", ""]
        if result.entries == "volumes":
            lines += [VOLUME_METRICS_NOTE, ""]
        lines += ["| metric | ours | published AnomalyCLIP |", "|---|---:|---:|"]
        for metric, label in result.metric_labels.items():
            theirs = format_percent(result.published[metric]) if metric in result.published else NOT_REPORTED
            lines.append(f"| {label} | {format_percent(result.mean[metric])} | {theirs} |")
        if len(result.classes) > 1:
            lines += ["", f"| class | {result.entries} | " + " | ".join(result.metric_labels.values()) + " |",
                      "|---|---:|" + "---:|" * len(result.metric_labels)]
            for cls_name, class_result in result.classes.items():
                values = " | ".join(format_percent(class_result.metrics[metric]) for metric in result.metric_labels)
                lines.append(f"| {cls_name} | {class_result.images} | {values} |")
        if result.operating_points:
            lines += ["", "At the calibration's operating points (percent, 95% Wilson intervals):", "",
                      *markdown_rows(result.operating_points)]
        lines.append("")
    with atomic_write(path) as temporary:
        temporary.write_text("\n".join(lines), encoding="utf-8")
