"""Turn the paths a user typed into cases: one per DICOM series, DICOM multi-frame file, NIfTI file or image.

DICOM files are recognised by content (the 'DICM' marker), not by extension, because scanners and PACS
exports rarely name them `.dcm`. Single-frame DICOM files with a position and an orientation are
stacked by SeriesInstanceUID (and orientation and matrix size, so a three-plane localiser splits into
its stacks); everything else is one case per file.

What cannot become a case is reported, not raised: a folder with some bad files still yields the good
ones. Files that are clearly not images (a README, a DICOMDIR index, a structured report) are skipped
without a word; files that look like broken images (a truncated DICOM, a `.dcm` that is not DICOM) are
reported as `InputProblem`s. Only when nothing at all can be read does `discover_cases` raise.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import warnings
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, MediaStorageDirectoryStorage, ParametricMapStorage, SegmentationStorage

from medclip_ad.errors import UserInputError
from medclip_ad.io.read_checks import check_deflated_dicom
from medclip_ad.io.dicom_checks import dicom_image_problem

CaseKind = Literal["dicom", "nifti", "image"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")

# DICOM objects that carry pixels but are not images to screen: indexes, segmentations and parametric
# maps (the latter is what `--dicom-out` writes, so a re-run over an output folder skips it).
_NOT_SCREENED_SOP_CLASSES = frozenset({MediaStorageDirectoryStorage, SegmentationStorage, ParametricMapStorage})
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
# Storage SOP classes whose instances must carry an image ("CT Image Storage", "Digital X-Ray Image
# Storage - For Presentation"): without Rows such a file was cut off, not a report.
_IMAGE_SOP_CLASS_SUFFIXES = ("Image Storage", "Image Storage - For Presentation", "Image Storage - For Processing")
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Header values larger than this are not loaded while probing, so the pixel data is skipped, not read.
_PROBE_DEFER_BYTES = 256
# Slices stack when each orientation cosine varies across them by at most this much (headers round and
# scanners jitter in the 4th to 6th decimal); the DICOM reader checks a series with the same number.
ORIENTATION_TOLERANCE: float = 1e-3
_MAX_NAME_LENGTH = 96


@dataclass(frozen=True)
class CaseSource:
    """One case to read: the files, how to read them, and a unique, filesystem-safe name for its outputs.

    `paths` holds one file, except for a DICOM series where it holds every slice file (in no particular
    order: the reader orders slices by position). `input` is the path the user gave that led here.
    """

    name: str
    kind: CaseKind
    paths: tuple[Path, ...]
    input: Path
    series_uid: str | None = None
    description: str = ""

    @property
    def location(self) -> Path:
        """The file, or for a multi-file series its folder: what messages about this case should name."""
        if len(self.paths) == 1:
            return self.paths[0]
        return Path(os.path.commonpath(self.paths))


class InputProblem(NamedTuple):
    """A path that yields no case, and why, in words a user can act on."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class _DicomProbe:
    """What grouping needs from one DICOM file's header."""

    path: Path
    series_uid: str | None
    series_number: str
    description: str
    stack_key: tuple | None  # (orientation cosines, rows, columns); None: no geometry, so it cannot join a stack


def discover_cases(inputs: Sequence[Path], exclude: Sequence[Path] = ()) -> tuple[list[CaseSource], list[InputProblem]]:
    """Find every case under `inputs` (files or folders, searched recursively) and every problem.

    Folders in `exclude` are not searched and files in it are not read: an output folder inside an input
    folder must not turn the overlays and maps of an earlier run into new cases, and a caller confining
    reads to some folders excludes links that lead out of them.

    A missing path is a problem like a broken file: reported, while the other inputs are processed.
    Raises `UserInputError` only when no case at all is found (so a single missing input is an error),
    with the problem as its one line; a caller always has something to process when this returns.
    """
    cases: list[CaseSource] = []
    problems: list[InputProblem] = []
    for raw in inputs:
        path = Path(raw)
        unusable = _unusable_file(path) if os.path.lexists(path) and not path.is_dir() else None
        if not os.path.lexists(path):
            problems.append(InputProblem(path, "does not exist"))
        elif unusable is not None:
            problems.append(unusable)
        elif path.is_dir():
            found, trouble = _discover_folder(path, {Path(folder).resolve() for folder in exclude})
            cases.extend(found)
            problems.extend(trouble)
        else:
            found, trouble = _discover_file(path)
            cases.extend(found)
            problems.extend(trouble)
    if not cases:
        raise UserInputError(_nothing_found_message(inputs, problems))
    return _with_unique_names(cases), problems


def _nothing_found_message(inputs: Sequence[Path], problems: list[InputProblem]) -> str:
    """One line for the case where no input yields anything."""
    if len(problems) == 1:
        return str(problems[0])
    if problems:
        return f"no readable input; {len(problems)} problems, the first: {problems[0]}"
    return f"{', '.join(str(p) for p in inputs) or 'no input'}: no DICOM, NIfTI or 2-D image files found"


def _discover_file(path: Path) -> tuple[list[CaseSource], list[InputProblem]]:
    """A file named directly by the user: unlike files found in folders, an unknown type is a problem."""
    kind = _kind_by_suffix(path)
    if kind is not None:
        return [CaseSource(safe_name(_stem(path)), kind, (path,), path, description=path.name)], []
    probe = _probe_dicom(path)
    if isinstance(probe, InputProblem):
        return [], [probe]
    if probe is None:
        if pydicom.misc.is_dicom(path):
            return [], [InputProblem(path, "DICOM file holds no image to screen (index, report or segmentation)")]
        return [], [InputProblem(path, "not a DICOM, NIfTI (.nii/.nii.gz) or 2-D image (PNG, JPEG, TIFF) file")]
    return [_dicom_file_case(probe, path, safe_name(_stem(path)))], []


def _discover_folder(root: Path, exclude: set[Path]) -> tuple[list[CaseSource], list[InputProblem]]:
    """Every case below `root` outside `exclude`; DICOM slices are stacked per folder tree, not per sub-folder."""
    cases: list[CaseSource] = []
    problems: list[InputProblem] = []
    probes: list[_DicomProbe] = []
    files, unreadable_folders = _walk(root, exclude)
    problems.extend(unreadable_folders)
    for path in files:
        unusable = _unusable_file(path)
        if unusable is not None:
            problems.append(unusable)
            continue
        kind = _kind_by_suffix(path)
        if kind is not None:
            cases.append(CaseSource(_name_below(root, path), kind, (path,), root, description=path.name))
            continue
        probe = _probe_dicom(path)
        if isinstance(probe, InputProblem):
            problems.append(probe)
        elif probe is not None:
            probes.append(probe)
    cases.extend(_dicom_cases(root, probes))
    if not cases and not problems:
        problems.append(InputProblem(root, "no DICOM, NIfTI or 2-D image files found"))
    return cases, problems


def _walk(root: Path, exclude: set[Path]) -> tuple[list[Path], list[InputProblem]]:
    """Files below `root` in a stable order, without hidden files or folders (.DS_Store, .git) and without the
    (resolved) folders and files in `exclude`; and the folders that could not be listed, as problems."""
    found: list[Path] = []
    unreadable: list[InputProblem] = []

    def report(error: OSError) -> None:
        unreadable.append(InputProblem(Path(error.filename or root), f"folder cannot be read ({error.strerror})"))

    for folder, subfolders, files in os.walk(root, onerror=report):
        subfolders[:] = sorted(d for d in subfolders
                               if not d.startswith(".") and not _excluded(Path(folder, d), exclude))
        found.extend(Path(folder, f) for f in sorted(files)
                     if not f.startswith(".") and not _excluded(Path(folder, f), exclude))
    return found, unreadable


def _excluded(path: Path, exclude: set[Path]) -> bool:
    """Whether `path` resolves into `exclude`; a link loop resolves nowhere (and is reported as a problem later)."""
    try:
        return path.resolve() in exclude
    except (OSError, RuntimeError):
        return False


# What `stat` calls the file types that are not regular files, for messages.
_FILE_TYPES = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def _unusable_file(path: Path) -> InputProblem | None:
    """Why `path` cannot be opened as an input file, found without opening it (a FIFO would block forever):
    a dangling link, a link loop, something that is not a regular file, or a file without read permission."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return InputProblem(path, "symbolic link loop (the link points back to itself)")
        if path.is_symlink():
            return InputProblem(path, f"dangling symbolic link (points to {os.readlink(path)}, which does not exist)")
        return InputProblem(path, f"cannot be read ({error.strerror})")
    if not stat.S_ISREG(mode):
        return InputProblem(path, f"not a regular file: {_FILE_TYPES.get(stat.S_IFMT(mode), 'a special file')}")
    if not os.access(path, os.R_OK):
        return InputProblem(path, "cannot be read (permission denied)")
    return None


def _kind_by_suffix(path: Path) -> CaseKind | None:
    """NIfTI and 2-D image files are recognised by name; DICOM is recognised by content instead."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return None


def read_dicom_header(path: Path) -> pydicom.Dataset:
    """A DICOM file's header, with large values (the pixel data) located but left unread on disk; a
    deflated file is first checked not to inflate past the limits (pydicom inflates it whole)."""
    check_deflated_dicom(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every header quirk and about cut-off files
        return pydicom.dcmread(path, defer_size=_PROBE_DEFER_BYTES)


def dicom_pixel_shortfall(ds: pydicom.Dataset, path: Path) -> str:
    """Why an image's header or pixel data is incomplete (a cut-off file), or '' when all is there."""
    if "Rows" not in ds or "Columns" not in ds:
        return "truncated or corrupt DICOM file (no complete image header)"
    element = next((ds.get_item(t, keep_deferred=True) for t in _PIXEL_DATA_TAGS if t in ds), None)
    if element is None:
        return "truncated DICOM file (the image header is there, the pixel data is missing or cut off)"
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if element.length == _UNDEFINED_LENGTH or element.value is not None or (syntax and syntax.is_deflated):
        return ""  # encapsulated data was found whole while parsing; deflated files have no byte layout
    available = max(path.stat().st_size - element.value_tell, 0)
    if available < element.length:
        return f"truncated DICOM file (pixel data needs {element.length} bytes, the file holds {available})"
    return ""


def _probe_dicom(path: Path) -> _DicomProbe | InputProblem | None:
    """Read one file's DICOM header: a probe for an image, a problem for a broken one, None to skip.

    Non-DICOM files are skipped unless their name promises DICOM. Pixel data is not decoded here, only
    checked to be all there, so a truncated slice is reported before it can spoil a series.
    """
    try:
        is_dicom = pydicom.misc.is_dicom(path)
    except OSError as exc:
        return InputProblem(path, f"cannot be read ({exc.strerror or exc})")
    if not is_dicom:
        if path.name.lower().endswith(DICOM_SUFFIXES):
            return InputProblem(path, "not a DICOM file with file meta information (no 'DICM' marker at byte 128)")
        return None
    try:
        return _probe_header(read_dicom_header(path), path)
    except UserInputError as exc:  # refused by a size check: one problem, the other files go on
        return InputProblem(path, str(exc).removeprefix(f"{path}: "))
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        reason = next(iter(str(exc).splitlines()), "") or type(exc).__name__
        return InputProblem(path, f"corrupt DICOM file ({reason[:160]})")


def _probe_header(ds: pydicom.Dataset, path: Path) -> _DicomProbe | InputProblem | None:
    """Classify a parsed header; raises ValueError/TypeError on values that do not parse."""
    sop_class = UID(str(ds.file_meta.get("MediaStorageSOPClassUID", ds.get("SOPClassUID", ""))))
    if sop_class in _NOT_SCREENED_SOP_CLASSES:
        return None
    if "Rows" not in ds and not sop_class.name.endswith(_IMAGE_SOP_CLASS_SUFFIXES):
        return None  # a report, presentation state, key object selection...: nothing to screen
    shortfall = dicom_pixel_shortfall(ds, path) or dicom_image_problem(ds)
    if shortfall:
        return InputProblem(path, shortfall)
    return _DicomProbe(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
        series_number=str(ds.get("SeriesNumber", "") or ""),
        description=str(ds.get("SeriesDescription", "") or ""),
        stack_key=_stack_key(ds),
    )


def _stack_key(ds: pydicom.Dataset) -> tuple | None:
    """Slices stack only with slices of the same orientation and matrix; None without geometry."""
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None or ds.get("ImagePositionPatient") is None or len(orientation) != 6:
        return None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return None
    return (tuple(float(v) for v in orientation), int(ds.Rows), int(ds.Columns))


def _dicom_cases(root: Path, probes: list[_DicomProbe]) -> list[CaseSource]:
    """Stack single-frame slices by (series, orientation, matrix); every other DICOM file is its own case."""
    stacks: dict[tuple, list[_DicomProbe]] = {}
    cosine_ranges: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    singles: list[_DicomProbe] = []
    for probe in probes:
        if probe.series_uid is None or probe.stack_key is None:
            singles.append(probe)
        else:
            stacks.setdefault(_stack_for(cosine_ranges, probe), []).append(probe)

    folders = {key: Path(os.path.commonpath([m.path.parent for m in members])) for key, members in stacks.items()}
    stacks_per_folder = Counter(folders.values())
    stacks_per_series = Counter(key[0] for key in stacks)

    cases: list[CaseSource] = []
    stack_counter: Counter[str] = Counter()
    for key, members in stacks.items():
        series_uid, first, folder = key[0], members[0], folders[key]
        name = _name_below(root, folder)
        if stacks_per_folder[folder] > 1:
            name = safe_name(f"{name}_{_series_label(first)}")
        if stacks_per_series[series_uid] > 1:
            stack_counter[series_uid] += 1
            name = safe_name(f"{name}_stack{stack_counter[series_uid]}")
        paths = tuple(sorted(m.path for m in members))
        cases.append(CaseSource(name, "dicom", paths, root, series_uid, first.description))
    for probe in singles:
        cases.append(_dicom_file_case(probe, root, _name_below(root, probe.path)))
    return cases


def _stack_for(stacks: dict[tuple, tuple[np.ndarray, np.ndarray]], probe: _DicomProbe) -> tuple:
    """The key of the stack `probe` joins (same series and matrix, every orientation cosine staying within
    ORIENTATION_TOLERANCE across the stack), or a new one; `stacks` holds each stack's cosine range."""
    cosines, rows, columns = probe.stack_key
    point = np.array(cosines)
    for key, (low, high) in stacks.items():
        if key[0] == probe.series_uid and key[2:] == (rows, columns) and \
                float((np.maximum(high, point) - np.minimum(low, point)).max()) <= ORIENTATION_TOLERANCE:
            stacks[key] = (np.minimum(low, point), np.maximum(high, point))
            return key
    key = (probe.series_uid, len(stacks), rows, columns)
    stacks[key] = (point, point)
    return key


def _dicom_file_case(probe: _DicomProbe, root: Path, name: str) -> CaseSource:
    """A DICOM file that is a case on its own: multi-frame, or without the geometry to join a stack."""
    return CaseSource(name, "dicom", (probe.path,), root, probe.series_uid, probe.description or probe.path.name)


def _series_label(probe: _DicomProbe) -> str:
    """A short tag telling series in one folder apart: series number and description."""
    parts = [f"s{probe.series_number}" if probe.series_number else "", probe.description[:24]]
    return "_".join(p for p in parts if p) or (probe.series_uid or "series")[-8:]


def _stem(path: Path) -> str:
    """The file name without its image/volume suffix (both parts of `.nii.gz`)."""
    name = path.name
    for suffix in NIFTI_SUFFIXES + IMAGE_SUFFIXES + DICOM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _name_below(root: Path, path: Path) -> str:
    """A case name for something inside the input folder: its path relative to the folder (without
    suffix), or the folder's own name for a series lying directly in it."""
    relative = path.relative_to(root)
    if not relative.parts:
        return safe_name(root.resolve().name)  # resolve: "." names the working folder
    return safe_name("_".join([*relative.parent.parts, _stem(relative)]))


def safe_name(text: str) -> str:
    """Letters, digits, dot, dash and underscore only: safe as a folder name on every filesystem."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return cleaned[:_MAX_NAME_LENGTH] or "case"


def _with_unique_names(cases: list[CaseSource]) -> list[CaseSource]:
    """Suffix repeated names with -2, -3, ... (case-insensitively, for case-insensitive filesystems)."""
    seen: set[str] = set()
    unique: list[CaseSource] = []
    for case in cases:
        name, n = case.name, 1
        while name.lower() in seen:
            n += 1
            name = f"{case.name}-{n}"
        seen.add(name.lower())
        unique.append(case if name == case.name else replace(case, name=name))
    return unique
