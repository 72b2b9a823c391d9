"""Sensitivity, specificity, PPV and NPV at a calibration's operating points, with Wilson intervals.

The threshold-free metrics say how well scores rank; these say what a site gets at the thresholds it
will actually use. Each rate is a proportion of a count, so its interval is Wilson's score interval,
which stays inside [0, 1] and behaves at small counts and at rates near 0 or 1 (where the normal
approximation does not). A rate whose denominator is zero is undefined (None), not zero.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from medclip_ad.inference.calibration import Calibration


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson's score interval for a proportion `successes / total`; None when `total` is 0."""
    if total == 0:
        return None
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(successes: int, total: int, confidence: float) -> dict:
    interval = wilson_interval(successes, total, confidence)
    return {"value": successes / total if total else None, "interval": list(interval) if interval else None,
            "count": f"{successes}/{total}"}


def operating_point_metrics(labels: np.ndarray, scores: np.ndarray, calibration: Calibration,
                            confidence: float = 0.95) -> list[dict]:
    """One record per operating point: threshold, confusion counts and the four rates with intervals."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    records = []
    for point in calibration.operating_points:
        flagged = scores > point.threshold
        tp, fp = int(np.sum(flagged & labels)), int(np.sum(flagged & ~labels))
        fn, tn = int(np.sum(~flagged & labels)), int(np.sum(~flagged & ~labels))
        records.append({"operating_point": point.name, "fpr": point.fpr, "threshold": point.threshold,
                        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
                        "sensitivity": _rate(tp, tp + fn, confidence), "specificity": _rate(tn, tn + fp, confidence),
                        "ppv": _rate(tp, tp + fp, confidence), "npv": _rate(tn, tn + fn, confidence)})
    return records


def markdown_rows(records: list[dict]) -> list[str]:
    """The operating points as a results.md table: each rate in percent with its interval."""
    def cell(rate: dict) -> str:
        if rate["value"] is None:
            return "n/a"
        low, high = rate["interval"]
        return f"{100 * rate['value']:.1f} ({100 * low:.1f}-{100 * high:.1f})"

    lines = ["| operating point | threshold | sensitivity | specificity | PPV | NPV |",
             "|---|---:|---:|---:|---:|---:|"]
    for record in records:
        lines.append(f"| FPR {record['operating_point']} | {record['threshold']:.4g} | {cell(record['sensitivity'])} | "
                     f"{cell(record['specificity'])} | {cell(record['ppv'])} | {cell(record['npv'])} |")
    return lines
