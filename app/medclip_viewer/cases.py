"""What can be opened at a location (studies, or finished `infer` cases), and opening one.

A location is a folder or file under the data root, an upload, or the results folder the viewer was
started with. Folders holding `infer` outputs (a `scores.json` in the folder or its sub-folders) list
those cases, never the maps inside them as new studies. Any other location goes through the package's
own discovery, so the viewer accepts exactly what `medclip-ad infer` accepts and reports unreadable
files the same way.

Opening a finished case reads its map and re-reads the scan it was computed from (the `input` in
scores.json), and checks that the two still match. Every read is confined to the location's `Scope`
(see confinement.py): a result names its scan, and a crafted result must not name a server file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from medclip_ad.config import PLANE_NORMALS
from medclip_ad.errors import UserInputError
from medclip_ad.io.discovery import CaseSource, discover_cases
from medclip_ad.io.json_documents import read_json_file
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan

from medclip_viewer.confinement import NOT_AVAILABLE, Scope

SCORES_FILE = "scores.json"
VOLUME_MAP_FILE = "anomaly_map.nii.gz"
IMAGE_MAP_FILE = "anomaly_map.npy"
# How many folders below an opened location case folders are looked for (an upload of a results folder
# zipped with its scan holds them one or two levels down).
RESULT_SEARCH_DEPTH = 3


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
    """Everything openable found at `origin` (a folder or file), one line per thing that could not be read
    (files named relative to the scope), and the scope every read of its cases is confined to."""

    origin: Path
    items: tuple[Openable, ...]
    problems: tuple[str, ...]
    scope: Scope


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


def catalogue(location: Path, scope: Scope) -> Catalogue:
    """The finished cases at `location` if it holds any, else the studies discovery finds there."""
    try:
        location = scope.confine(location, "folder")
    except UserInputError as error:
        return Catalogue(location, (), (str(error),), scope)
    results = _result_folders(location, scope)
    if results:
        return Catalogue(location, tuple(results), (), scope)
    links = scope.links_leading_out(location)
    refused = tuple(f"{scope.name(link)}: {NOT_AVAILABLE}" for link in links)
    try:
        sources, problems = discover_cases([location], exclude=[link.resolve() for link in links])
    except UserInputError as error:
        return Catalogue(location, (), (*refused, scope.redact(str(error))), scope)
    return Catalogue(location, tuple(sources),
                     (*refused, *(f"{scope.name(problem.path)}: {problem.message}" for problem in problems)), scope)


def _result_folders(location: Path, scope: Scope) -> list[ResultFolder]:
    """`location` itself when it is a case folder, else the case folders below it (a few levels deep, inside
    the scope), by path."""
    if not location.is_dir():
        return []
    if (location / SCORES_FILE).is_file():
        return [ResultFolder(location)]
    found: list[ResultFolder] = []
    for folder, subfolders, files in os.walk(location):
        depth = len(Path(folder).relative_to(location).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if depth < RESULT_SEARCH_DEPTH else []
        if depth and SCORES_FILE in files and scope.contains(Path(folder, SCORES_FILE)):
            found.append(ResultFolder(Path(folder)))
            subfolders[:] = []
    return sorted(found, key=lambda result: result.path)


def item_key(item: Openable) -> str:
    """A stable identity for caching what was computed for a case (uploads live in content-addressed folders)."""
    if isinstance(item, ResultFolder):
        return f"result:{item.path.resolve()}"
    return f"study:{item.location.resolve()}:{item.series_uid or ''}:{item.name}"


def item_label(item: Openable, name: str) -> str:
    """How a case is listed: `name` (its own, or a neutral label) and, for studies, what it is."""
    if isinstance(item, ResultFolder):
        return f"{name} (results)"
    return f"{name} ({item.kind}, {len(item.paths)} file{'s' if len(item.paths) > 1 else ''})"


def load_result(folder: Path, scope: Scope | None = None) -> CaseResult:
    """A case folder's scores.json, checked to be an `infer` output this viewer can show; with a scope, its
    files must lie inside it."""
    scope = scope or Scope.of(folder)
    path = scope.confine(folder / SCORES_FILE, "results file")
    try:
        document = read_json_file(path, "scores.json")
    except UserInputError as error:
        raise UserInputError(scope.redact(str(error))) from None
    if not isinstance(document, dict):
        raise UserInputError(f"{scope.name(path)}: not a medclip-ad scores.json (not a JSON object)")
    missing = [key for key in ("case", "input", "kind", "score", "map_range", "model") if key not in document]
    if missing:
        raise UserInputError(f"{scope.name(path)}: not a medclip-ad scores.json (missing {', '.join(missing)})")
    problem = _document_problem(document)
    if problem:
        raise UserInputError(f"{scope.name(path)}: not a medclip-ad scores.json ({problem})")
    result = CaseResult(document, folder)
    scope.confine(result.map_path, "anomaly map")
    return result


def _document_problem(document: dict) -> str:
    """What in a scores.json the viewer cannot show (a wrong type where it computes or indexes), or ''."""
    def numbers(value: object) -> bool:
        return isinstance(value, list) and all(_is_number(item) for item in value)

    if document["kind"] not in ("image", "volume") or not isinstance(document["input"], str):
        return "unknown kind or input"
    if not _is_number(document["score"]) or not numbers(document["map_range"]) or len(document["map_range"]) != 2:
        return "score and map_range must be numbers"
    if not isinstance(document["model"], dict) or not isinstance(document["case"], str):
        return "case must be a name and model an object"
    if document["kind"] == "image":
        return ""
    scores, top = document.get("slice_scores"), document.get("top_slices")
    if document.get("slice_axis") not in PLANE_NORMALS or not numbers(scores) or not isinstance(top, list):
        return "a volume needs slice_axis, slice_scores and top_slices"
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(scores) for i in top):
        return "top_slices must index slice_scores"
    return ""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def open_result(folder: Path, scope: Scope) -> tuple[Scan, CaseResult]:
    """A finished case and the scan it was computed from, re-read from the input scores.json names.

    A relative input is taken from the case folder; either way it must lie inside the scope, and a
    missing input and one outside get the same message.
    """
    result = load_result(folder, scope)
    input_path = scope.confine(folder / result.document["input"], "the scanned input")
    sources, _ = discover_cases([input_path], exclude=[link.resolve() for link in scope.links_leading_out(input_path)])
    return _matching_scan(sources, result, scope), result


def _matching_scan(sources: list[CaseSource], result: CaseResult, scope: Scope) -> Scan:
    """The case among `sources` the result was computed from: by name, else the one of matching shape."""
    named = [source for source in sources if source.name == result.document["case"]]
    for source in named + [source for source in sources if source not in named]:
        scan = read_case(source, result.document.get("volume_index"))
        if _shape_matches(scan, result):
            return scan
    raise UserInputError(f"{scope.name(result.folder)}: no case at {scope.name(result.document['input'])} has the "
                         "shape the map was computed on")


def _shape_matches(scan: Scan, result: CaseResult) -> bool:
    if scan.kind != result.document["kind"]:
        return False
    return scan.kind == "image" or list(scan.array.shape) == list(result.document.get("shape", []))


def load_map(result: CaseResult, scan: Scan) -> np.ndarray:
    """The case's anomaly map as float32, checked to lie on the scan's grid (volume shape, or image H x W)
    from its header, before its values are read."""
    path = result.map_path
    name = f"{result.folder.name}/{path.name}"
    expected = scan.array.shape if scan.kind == "volume" else scan.array.shape[:2]
    try:
        stored = nib.load(path).dataobj if result.document["kind"] == "volume" else np.load(path, mmap_mode="r")
        if tuple(stored.shape) != tuple(expected):
            raise UserInputError(f"{name}: map shape {tuple(stored.shape)} does not match the scan's {expected}")
        return np.asarray(stored, dtype=np.float32)
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise UserInputError(f"{name}: unreadable anomaly map ({type(exc).__name__})") from exc
