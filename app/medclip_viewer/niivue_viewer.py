"""The interactive slice display: NiiVue (WebGL) in a small Streamlit component, fed by URL.

Streamlit serves a component's files from its folder, so the component's built page (niivue/build,
shipped in the package; no node at run time) is copied into a server-wide temporary folder, and each
case's display volumes are written beside it once: the scan in its stored units (int16 when the values
are whole numbers that fit, else uint16 with a NIfTI scale) and the map as 8-bit with `scl_slope`, so
values read back in map units. Both are gzipped once when written (the server would otherwise compress
the scan again for every request, seconds on a loaded machine). File names are content hashes, so every
session and rerun reuses them and nothing guessable is served; the worklist's next case gets its files
while the reader looks at this one (case_cache.read_ahead). A large volume also gets a coarse preview of
scan and map (preview_volume), which the viewer draws first while the full files load. The browser
fetches them once per case; scrolling, window/level, crosshair and the value under the cursor never call
back into Python. Only N/P (next or previous case) and B (bookmark the crosshair's slice) come back as the
component's value.

The volume shown is the in-memory scan the model scored, with its affine (a DICOM series in the same
orientation inference used), and the map on the same grid.
"""

from __future__ import annotations

import atexit
import gzip
import hashlib
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import streamlit.components.v1 as components
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.scan import Scan

from medclip_viewer.case_cache import OpenedCase, SharedTable, file_version, load_map_shared, on_read_ahead
from medclip_viewer.cases import CaseResult
from medclip_viewer.preview_volume import preview_affine, preview_factor, reduce_blocks
from medclip_viewer.viewer_actions import KEY_VIEWER, take_unhandled

COMPONENT_NAME = "niivue_slices"
BUILD_DIR = Path(__file__).resolve().parent / "niivue" / "build"
VOLUMES_DIR = "volumes"
LAYOUTS: tuple[str, ...] = ("multiplanar", "axial", "coronal", "sagittal")
# Display files kept on the server; the oldest go first (a 256x256x120 case is about 17 MB).
MAX_DISPLAY_FILES = 64
MAP_LEVELS = 255
RGB_LEVELS = 255
RGB24 = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
# 2-D images are shown as one-slice volumes with unit pixels (their files record no spacing).
IMAGE_AFFINE = np.eye(4)
INT16 = np.iinfo(np.int16)
UINT16_LEVELS = np.iinfo(np.uint16).max
DISPLAY_SUFFIX = ".nii.gz"
# Fastest gzip level: an int16 CT shrinks to about half at a quarter of a second; higher levels gain little.
GZIP_LEVEL = 1
# Streamlit's loading placeholders shimmer; where the browser draws in software (no GPU), repainting that
# shimmer every frame starves the viewer's WebGL set-up (measured: 0.5-0.7 s still, 2.7-4.4 s shimmering).
# Every page that shows the viewer puts this style on it.
STILL_PLACEHOLDERS = '<style>[data-testid="stSkeleton"] { animation: none !important; }</style>'
_served_lock = threading.Lock()
_served: list[Path] = []


@dataclass(frozen=True)
class DisplayFiles:
    """URLs (relative to the component page) of one volume's display file and of its coarse preview (None
    when the volume is small enough to show at once)."""

    full: str
    preview: str | None = None


# Display files of each open scan, by the scan object (its id, with a weak reference to tell a reused id).
_scan_files: SharedTable[tuple[weakref.ref, DisplayFiles]] = SharedTable(MAX_DISPLAY_FILES)
_map_files: SharedTable[DisplayFiles] = SharedTable(MAX_DISPLAY_FILES)


def served_folder() -> Path:
    """The server's component folder: the built page, and the display volumes written for it."""
    with _served_lock:
        if not _served:
            folder = Path(tempfile.mkdtemp(prefix="medclip-ad-niivue-"))
            atexit.register(shutil.rmtree, folder, True)
            shutil.copytree(BUILD_DIR, folder, dirs_exist_ok=True)
            (folder / VOLUMES_DIR).mkdir()
            _served.append(folder)
        return _served[0]


def image_volume(array: np.ndarray) -> np.ndarray:
    """A 2-D image (rows, columns[, RGB]) as a one-slice volume for IMAGE_AFFINE: x along the columns, y up
    the rows, so NiiVue's axial view (neurological, x to the right) shows the picture as stored."""
    return np.ascontiguousarray(np.swapaxes(np.asarray(array)[::-1], 0, 1)[:, :, None])


def _rgb_image(volume: np.ndarray) -> nib.Nifti1Image:
    """An (x, y, 1, 3) colour volume as a NIfTI RGB24 image (NiiVue shows its colours as they are)."""
    channels = volume.astype(np.float64)
    if volume.dtype != np.uint8:  # 16-bit colour: its own range onto 8 bits
        channels = channels * (RGB_LEVELS / max(float(channels.max()), 1.0))
    rgb = np.empty(volume.shape[:3], dtype=RGB24)
    for index, name in enumerate(RGB24.names):
        rgb[name] = np.clip(np.round(channels[..., index]), 0, RGB_LEVELS).astype(np.uint8)
    return nib.Nifti1Image(rgb, IMAGE_AFFINE)


def display_scan_bytes(scan: Scan, factor: int = 1) -> bytes:
    """The scan as a NIfTI in its stored units, at 16 bits: int16 when every value is a whole number in
    range (CT in HU), else uint16 spanning the finite range with a scale (MR, PET). A 2-D image becomes a
    one-slice volume (`image_volume`), colour ones as RGB. `factor` > 1: a volume's preview, its blocks
    of factor^3 voxels averaged."""
    if scan.kind == "image" and scan.array.ndim == 3:
        return _rgb_image(image_volume(scan.array)).to_bytes()
    array = image_volume(scan.array) if scan.kind == "image" else np.asarray(scan.array)
    affine = IMAGE_AFFINE if scan.kind == "image" else scan.affine
    if factor > 1:
        array, affine = reduce_blocks(array, factor, np.mean), preview_affine(affine, factor)
    finite = np.isfinite(array)
    low, high = (float(array[finite].min()), float(array[finite].max())) if finite.any() else (0.0, 0.0)
    if INT16.min <= low and high <= INT16.max and np.array_equal(array[finite], np.round(array[finite])):
        image = nib.Nifti1Image(np.where(finite, array, 0).astype(np.int16), affine)
    else:
        slope = (high - low) / UINT16_LEVELS or 1.0
        levels = np.round((np.where(finite, array, low) - low) / slope).astype(np.uint16)
        image = nib.Nifti1Image(levels, affine)
        image.header.set_slope_inter(slope, low)
    return image.to_bytes()


def display_map_bytes(anomaly_map: np.ndarray, affine: np.ndarray, map_max: float, factor: int = 1) -> bytes:
    """The map as 8-bit levels of [0, map_max] (gzipped; mostly near zero, it shrinks tenfold). `factor` > 1:
    its preview, each block of factor^3 voxels at its highest value (a small hot spot stays visible)."""
    if factor > 1:
        anomaly_map, affine = reduce_blocks(anomaly_map, factor, np.max), preview_affine(affine, factor)
    slope = map_max / MAP_LEVELS
    levels = np.round(np.clip(anomaly_map / slope, 0, MAP_LEVELS)).astype(np.uint8)
    image = nib.Nifti1Image(levels, affine)
    image.header.set_slope_inter(slope, 0.0)
    return image.to_bytes()


def _served_file(content: bytes) -> str:
    """The URL (relative to the component page) of a display NIfTI named by its content, written gzipped
    on first use."""
    folder = served_folder() / VOLUMES_DIR
    name = f"{hashlib.sha256(content).hexdigest()[:32]}{DISPLAY_SUFFIX}"
    path = folder / name
    if not path.is_file():
        temporary = folder / f".{name}.{threading.get_ident()}.partial"
        temporary.write_bytes(gzip.compress(content, compresslevel=GZIP_LEVEL))
        temporary.replace(path)
        _prune(folder)
    return f"{VOLUMES_DIR}/{name}"


def _prune(folder: Path) -> None:
    files = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for stale in files[:-MAX_DISPLAY_FILES]:
        stale.unlink(missing_ok=True)


def scan_files(scan: Scan) -> DisplayFiles:
    """The scan's display files, made once per scan object for the whole server (the case cache shares
    one object per opened case between sessions)."""
    def made() -> tuple[weakref.ref, DisplayFiles]:
        factor = preview_factor(scan.array.shape) if scan.kind == "volume" else 1
        preview = _served_file(display_scan_bytes(scan, factor)) if factor > 1 else None
        return weakref.ref(scan), DisplayFiles(_served_file(display_scan_bytes(scan)), preview)

    reference, files = _scan_files.get(id(scan), made)
    if reference() is not scan:  # the id of a scan since dropped
        _scan_files.discard(id(scan))
        return scan_files(scan)
    return files


def map_files(result: CaseResult, anomaly_map: np.ndarray, affine: np.ndarray, volume: bool) -> DisplayFiles:
    """The result's 8-bit display map (and, for a `volume`'s map, its preview on the grid of the scan's),
    made once per map file and version."""
    def made() -> DisplayFiles:
        factor = preview_factor(anomaly_map.shape) if volume else 1
        preview = _served_file(display_map_bytes(anomaly_map, affine, result.map_max, factor)) if factor > 1 else None
        return DisplayFiles(_served_file(display_map_bytes(anomaly_map, affine, result.map_max)), preview)

    key = (str(result.map_path.resolve()), file_version(result.map_path), result.map_max)
    return _map_files.get(key, made)


def display_urls(scan: DisplayFiles, anomaly_map: DisplayFiles | None) -> dict:
    """The viewer's file arguments: the full files, and the preview pair drawn first when the scan has one."""
    preview = None
    if scan.preview is not None:
        preview = {"scan_url": scan.preview, "map_url": anomaly_map.preview if anomaly_map is not None else None}
    return {"scan_url": scan.full, "map_url": anomaly_map.full if anomaly_map is not None else None,
            "preview": preview}


def _prepare_display(_key: tuple, opened: OpenedCase) -> None:
    """Write a read-ahead case's display files, so opening it only sends their URLs."""
    if opened.scan.kind == "volume":
        scan_files(opened.scan)
        map_files(opened.result, load_map_shared(opened.result, opened.scan), opened.scan.affine, volume=True)


on_read_ahead(_prepare_display)


def peak_mm(anomaly_map: np.ndarray, affine: np.ndarray, slice_axis: int, index: int) -> list[float]:
    """World position of the map's highest voxel within one slice: where the crosshair starts."""
    plane = anomaly_map[(slice(None),) * slice_axis + (index,)]  # a view: np.take copied slowly from nibabel's order
    row, column = np.unravel_index(int(np.argmax(plane)), plane.shape)
    voxel = [int(row), int(column)]
    voxel.insert(slice_axis, index)
    return [float(v) for v in (np.asarray(affine) @ np.array([*voxel, 1.0]))[:3]]


def niivue_view(*, case_id: str, scan: DisplayFiles, anomaly_map: DisplayFiles | None, mapping: IntensityMapping,
                style: OverlayStyle | None, map_max: float, layout: str, plane: str, focus_mm: list[float] | None,
                focus_id: str, height: int, random_weights: bool, on_action, image: bool = False,
                neighbours: dict[str, dict | None] | None = None) -> None:
    """Draw the viewer for the case `case_id` (an opaque name; the canvas says which case it shows, even
    when two cases share their files), at most `height` px tall (it fits itself to the window below it),
    with the random-weights mark when the map came from random CLIP weights; `on_action(ViewerAction)` runs
    (as a callback, before the page reruns) once for each N, P or B the reader pressed inside it, in order.
    `image`: a 2-D picture, shown as stored (no radiological flip, no orientation letters). `neighbours`: the
    opening views (`opening_view`) of the worklist's `next` and `previous` cases, which the viewer prepares
    and shows itself on N and P."""
    served_folder()
    component = components.declare_component(COMPONENT_NAME, path=str(served_folder()))
    low, high = mapping.bounds if mapping.bounds is not None else (0.0, 255.0)
    style = style or OverlayStyle()
    component(case_id=case_id, **display_urls(scan, anomaly_map), window=[float(low), float(high)],
              colormap=style.colormap, opacity=float(style.opacity), threshold=float(style.threshold),
              map_max=float(map_max), layout=layout, plane=plane,
              focus={"mm": focus_mm, "nonce": focus_id} if focus_mm else None, height=int(height),
              random_weights=bool(random_weights), image=bool(image), neighbours=neighbours or {},
              key=KEY_VIEWER, default=None,
              on_change=partial(_dispatch, on_action))


def _dispatch(on_action) -> None:
    for action in take_unhandled():
        on_action(action)
