"""What can be opened at a location (studies, or finished `infer` cases), and opening one.

A location is a folder or file under the data root, an upload, or the results folder the viewer was
started with. Folders holding `infer` outputs (a `scores.json` in the folder or its sub-folders) list
those cases, never the maps inside them as new studies. Any other location goes through the package's
own discovery, so the viewer accepts exactly what `medclip-ad infer` accepts and reports unreadable
files the same way.

Opening a finished case reads its map and re-reads the scan it was computed from (the `input` in
scores.json), and checks that the two still match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from medclip_ad.errors import UserInputError
from medclip_ad.io.discovery import CaseSource, discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan

SCORES_FILE = "scores.json"
VOLUME_MAP_FILE = "anomaly_map.nii.gz"
IMAGE_MAP_FILE = "anomaly_map.npy"


@dataclass(frozen=True)
class ResultFolder:
    """One finished `infer` case folder (scores.json, the map, overlays)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name


Openable = CaseSource | ResultFolder


@dataclass(frozen=True)
class Catalogue:
    """Everything openable found at `origin` (a folder or file), and one line per thing that could not be read."""

    origin: Path
    items: tuple[Openable, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class CaseResult:
    """A scored case: its scores.json document and the folder holding its map."""

    document: dict
    folder: Path

    @property
    def map_max(self) -> float:
        """Top of the map's fixed colour scale: the map range recorded by inference (number of layers)."""
        return float(self.document["map_range"][1])

    @property
    def random_weights(self) -> bool:
        return bool(self.document.get("model", {}).get("random_weights"))

    @property
    def map_path(self) -> Path:
        return self.folder / (VOLUME_MAP_FILE if self.document["kind"] == "volume" else IMAGE_MAP_FILE)


def catalogue(location: Path) -> Catalogue:
    """The finished cases at `location` if it holds any, else the studies discovery finds there."""
    results = _result_folders(location)
    if results:
        return Catalogue(location, tuple(results), ())
    try:
        sources, problems = discover_cases([location])
    except UserInputError as error:
        return Catalogue(location, (), (str(error),))
    return Catalogue(location, tuple(sources), tuple(str(problem) for problem in problems))


def _result_folders(location: Path) -> list[ResultFolder]:
    """`location` itself when it is a case folder, else its case sub-folders, by name."""
    if not location.is_dir():
        return []
    if (location / SCORES_FILE).is_file():
        return [ResultFolder(location)]
    return [ResultFolder(child) for child in sorted(location.iterdir())
            if child.is_dir() and not child.name.startswith(".") and (child / SCORES_FILE).is_file()]


def item_key(item: Openable) -> str:
    """A stable identity for caching what was computed for a case (uploads live in content-addressed folders)."""
    if isinstance(item, ResultFolder):
        return f"result:{item.path.resolve()}"
    return f"study:{item.location.resolve()}:{item.series_uid or ''}:{item.name}"


def item_label(item: Openable) -> str:
    """How a case is listed: its name and, for studies, what it is."""
    if isinstance(item, ResultFolder):
        return f"{item.name} (results)"
    return f"{item.name} ({item.kind}, {len(item.paths)} file{'s' if len(item.paths) > 1 else ''})"


def load_result(folder: Path) -> CaseResult:
    """A case folder's scores.json, checked to be an `infer` output this viewer can show."""
    path = folder / SCORES_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: not a readable scores.json ({exc})") from exc
    missing = [key for key in ("case", "input", "kind", "score", "map_range", "model") if key not in document]
    if missing:
        raise UserInputError(f"{path}: not a medclip-ad scores.json (missing {', '.join(missing)})")
    result = CaseResult(document, folder)
    if not result.map_path.is_file():
        raise UserInputError(f"{result.map_path}: the anomaly map is missing")
    return result


def open_result(folder: Path) -> tuple[Scan, CaseResult]:
    """A finished case and the scan it was computed from, re-read from the input scores.json names."""
    result = load_result(folder)
    input_path = Path(result.document["input"])
    if not input_path.exists():
        raise UserInputError(f"{folder}: the scanned input {input_path} is no longer there; the map cannot be shown "
                             "without its scan")
    sources, _ = discover_cases([input_path])
    scan = _matching_scan(sources, result, folder)
    return scan, result


def _matching_scan(sources: list[CaseSource], result: CaseResult, folder: Path) -> Scan:
    """The case among `sources` the result was computed from: by name, else the one of matching shape."""
    named = [source for source in sources if source.name == result.document["case"]]
    for source in named + [source for source in sources if source not in named]:
        scan = read_case(source, result.document.get("volume_index"))
        if _shape_matches(scan, result):
            return scan
    raise UserInputError(f"{folder}: no case at {result.document['input']} has the shape the map was computed on")


def _shape_matches(scan: Scan, result: CaseResult) -> bool:
    if scan.kind != result.document["kind"]:
        return False
    return scan.kind == "image" or list(scan.array.shape) == list(result.document.get("shape", []))


def load_map(result: CaseResult, scan: Scan) -> np.ndarray:
    """The case's anomaly map as float32, checked to lie on the scan's grid (volume shape, or image H x W)."""
    path = result.map_path
    try:
        if result.document["kind"] == "volume":
            anomaly_map = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        else:
            anomaly_map = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserInputError(f"{path}: unreadable anomaly map ({exc})") from exc
    expected = scan.array.shape if scan.kind == "volume" else scan.array.shape[:2]
    if anomaly_map.shape != expected:
        raise UserInputError(f"{path}: map shape {anomaly_map.shape} does not match the scan's {expected}")
    return anomaly_map
