"""Operating points fitted on studies the user declares normal, and applying them to new cases.

A raw case score is a sum of probabilities that no one calibrated: scanners, protocols and populations
shift it. A calibration scores normal studies exactly as `infer` does and turns their scores into
thresholds at chosen false-positive rates. With n normals sorted by score, the threshold for FPR `a` is
the k-th highest normal score with k = floor(a (n + 1)), and a case is flagged when its score is above
it: a new normal study from the same population then passes it with probability k / (n + 1) <= a
(conformal quantile), and the true FPR of the threshold follows Beta(k, n + 1 - k), which gives the
one-sided upper confidence bound and the interval recorded beside it. An FPR `a` needs k >= 1, that is
at least ceil(1 / a) - 1 normals; fewer are refused.

The pixel/voxel threshold is a high percentile of every normal map value, counted into a fixed
histogram (`VoxelStatistics`), so memory stays flat whatever the number and size of the normals.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from medclip_ad import __version__
from medclip_ad.config import CALIBRATION_CONFIDENCE
from medclip_ad.errors import UserInputError
from medclip_ad.io.file_digest import file_sha256

if TYPE_CHECKING:  # case.py imports this module
    from medclip_ad.inference.case import CaseOptions

CALIBRATION_FORMAT = "medclip-ad calibration"
CALIBRATION_VERSION = 1
# Provenance fields that change what a score means: a calibration applies only where all of them agree.
MODEL_FIELDS: tuple[str, ...] = ("method", "backbone", "clip_weights", "prompts_sha256", "layers", "image_size",
                                 "random_weights", "precision")
# Tolerance when turning a / (n + 1) products into counts, so 1 / 0.01 - 1 normals are enough for 1 %.
_COUNT_SLACK = 1e-9


def parse_fpr(text: str) -> float:
    """'5%' or '0.05' as a fraction in (0, 1)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if not match:
        raise UserInputError(f"false-positive rate {text!r}: give a percentage such as 5% or a fraction such as 0.05")
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0.0 < value < 1.0:
        raise UserInputError(f"false-positive rate {text!r}: must lie strictly between 0 and 100%")
    return value


def with_article(kind: str) -> str:
    """'an image', 'a volume'."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def fpr_label(fpr: float) -> str:
    """An FPR as users write it: 0.05 -> '5%'."""
    return f"{fpr * 100:g}%"


def normals_needed(fpr: float) -> int:
    """The fewest normals for which an FPR has a threshold: one normal must lie above it."""
    return max(1, math.ceil(1.0 / fpr - _COUNT_SLACK) - 1)


def too_few_normals(fpr: float, count: int) -> UserInputError:
    """The one line that says how many normals an FPR needs."""
    return UserInputError(f"an FPR of {fpr_label(fpr)} needs at least {normals_needed(fpr)} normals, got {count}; "
                          "add normals or ask for a larger --fpr")


@dataclass(frozen=True)
class OperatingPoint:
    """A case-score threshold and what the normals say about its false-positive rate."""

    name: str  # e.g. "5%"
    fpr: float  # the requested rate
    threshold: float  # flagged when score > threshold
    normals_above: int  # calibration normals above the threshold (k - 1)
    expected_fpr: float  # k / (n + 1): the rate on new normals of the same population, on average
    fpr_upper_bound: float  # one-sided bound at the calibration's confidence
    fpr_interval: tuple[float, float]  # central interval at the same confidence
    normals_needed: int


def fit_operating_point(scores: np.ndarray, fpr: float, confidence: float = CALIBRATION_CONFIDENCE) -> OperatingPoint:
    """The threshold for `fpr` from normal scores (see the module docstring for why this order statistic)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    n = ordered.size
    needed = normals_needed(fpr)
    if n < needed:
        raise too_few_normals(fpr, n)
    k = int(math.floor(fpr * (n + 1) + _COUNT_SLACK))
    threshold = float(ordered[n - k])
    beta = stats.beta(k, n + 1 - k)
    tail = (1.0 - confidence) / 2
    return OperatingPoint(name=fpr_label(fpr), fpr=fpr, threshold=threshold,
                          normals_above=int(np.count_nonzero(ordered > threshold)), expected_fpr=k / (n + 1),
                          fpr_upper_bound=float(beta.ppf(confidence)),
                          fpr_interval=(float(beta.ppf(tail)), float(beta.ppf(1 - tail))), normals_needed=needed)


def study_sha256(files: list[Path]) -> str:
    """One content hash for a study: its file's, or for a DICOM series the hash of its files' hashes in slice
    order, so a calibration names exactly the studies it was fitted on."""
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_sha256(path).encode("ascii"))
    return digest.hexdigest()


@dataclass
class Calibration:
    """What `calibration.json` holds; `check_applies` guards every use."""

    model: dict
    scoring: dict  # kind, axis, window, aggregation, top_k, volume_index
    normal_scores: list[float]
    normals: list[dict]  # {"case", "input", "sha256"} per normal, in scoring order
    operating_points: list[OperatingPoint]
    pixel_percentile: float
    pixel_threshold: float
    confidence: float = CALIBRATION_CONFIDENCE
    package_version: str = __version__
    path: Path | None = field(default=None, compare=False)  # where it was loaded from

    @property
    def count(self) -> int:
        return len(self.normal_scores)

    def operating_point(self, name: str | None) -> OperatingPoint:
        """The named operating point ('5%' or '0.05'), or the middle one when none is named."""
        if name is None:
            return self.operating_points[len(self.operating_points) // 2]
        wanted = parse_fpr(name)
        for point in self.operating_points:
            if math.isclose(point.fpr, wanted, rel_tol=1e-9):
                return point
        names = ", ".join(point.name for point in self.operating_points)
        raise UserInputError(f"--operating-point {name}: not in the calibration (it has {names})")

    def percentile(self, score: float) -> float:
        """The case's percentile among the calibration normals (ties count half), 0..100."""
        ordered = np.asarray(self.normal_scores, dtype=np.float64)
        below = np.count_nonzero(ordered < score) + 0.5 * np.count_nonzero(ordered == score)
        return float(100.0 * below / ordered.size)

    def check_applies(self, model: dict, scoring: dict, where: Path | str) -> None:
        """Refuse, in one line, a model or scoring option that differs from the calibration's."""
        for key in MODEL_FIELDS:
            if self.model.get(key) != model.get(key):
                raise UserInputError(f"{where}: calibrated with {key} {self.model.get(key)!r}, this run uses "
                                     f"{model.get(key)!r}; calibrate again with this model")
        for key, value in self.scoring.items():
            if key != "kind" and scoring.get(key) != value:
                raise UserInputError(f"{where}: calibrated with {key} {value!r}, this run uses {scoring.get(key)!r}; "
                                     f"use the calibration's scoring options or calibrate again")

    def decision(self, score: float, point: OperatingPoint) -> dict:
        """The scores.json fields of one case at one operating point."""
        return {"flagged": bool(score > point.threshold), "operating_point": point.name,
                "threshold": point.threshold, "percentile": self.percentile(score),
                "calibration": {"file": str(self.path) if self.path else None, "normals": self.count,
                                "fpr": point.fpr, "expected_fpr": point.expected_fpr,
                                "fpr_upper_bound": point.fpr_upper_bound, "confidence": self.confidence,
                                "pixel_threshold": self.pixel_threshold, "pixel_percentile": self.pixel_percentile}}

    def check_kind(self, kind: str, where: Path | str) -> None:
        if kind != self.scoring.get("kind"):
            raise UserInputError(f"{where}: {with_article(kind)} cannot use a calibration fitted on "
                                 f"{self.scoring.get('kind')}s")

    def to_json(self) -> dict:
        return {"format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, "package_version": self.package_version,
                "model": self.model, "scoring": self.scoring, "confidence": self.confidence,
                "operating_points": [asdict(point) for point in self.operating_points],
                "pixel_threshold": {"percentile": self.pixel_percentile, "value": self.pixel_threshold},
                "normals": {"count": self.count, "scores": self.normal_scores, "studies": self.normals}}

    @classmethod
    def load(cls, path: Path) -> Calibration:
        """Read and check a calibration file; anything malformed is one line naming the file."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserInputError(f"{path}: cannot read the calibration ({exc})") from exc
        if not isinstance(document, dict) or document.get("format") != CALIBRATION_FORMAT:
            raise UserInputError(f"{path}: not a medclip-ad calibration file (run `medclip-ad calibrate`)")
        if document.get("version") != CALIBRATION_VERSION:
            raise UserInputError(f"{path}: calibration format version {document.get('version')!r} is not supported")
        try:
            points = [OperatingPoint(**{**point, "fpr_interval": tuple(point["fpr_interval"])})
                      for point in document["operating_points"]]
            normals = document["normals"]
            scores = [float(score) for score in normals["scores"]]
            calibration = cls(model=dict(document["model"]), scoring=dict(document["scoring"]),
                              normal_scores=scores, normals=list(normals["studies"]), operating_points=points,
                              pixel_percentile=float(document["pixel_threshold"]["percentile"]),
                              pixel_threshold=float(document["pixel_threshold"]["value"]),
                              confidence=float(document["confidence"]),
                              package_version=str(document.get("package_version")), path=Path(path))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{path}: calibration file is incomplete or malformed ({exc})") from exc
        if not points or not scores or not all(np.isfinite(scores)):
            raise UserInputError(f"{path}: calibration file has no operating points or no finite normal scores")
        return calibration


def case_scoring(kind: str, options: CaseOptions) -> dict:
    """The scoring choices of a run as a calibration records and compares them, in JSON form (a window
    (width, level) becomes a list); images have none that change their score."""
    document: dict = {"kind": kind}
    if kind == "volume":
        window = options.window
        document.update(axis=options.axis, window=list(window) if isinstance(window, tuple) else window,
                        aggregation=options.aggregation,
                        top_k=options.top_k if options.aggregation == "topk_mean" else None,
                        volume_index=options.volume_index)
    return document
