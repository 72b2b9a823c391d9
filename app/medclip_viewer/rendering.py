"""What the viewer draws: a slice cut from a volume, oriented, sized and overlaid the way radiologists read.

Orientation follows the radiological convention used by PACS viewers, OHIF and 3D Slicer, derived from
the scan's RAS affine rather than from its voxel order, so a volume stored in any order looks the same:
- axial: patient right on screen left, anterior at the top (viewed from the feet);
- coronal: patient right on screen left, superior at the top (viewed from the front);
- sagittal: anterior on screen left, superior at the top (viewed from the patient's left).

Voxels are rarely cubes (4 mm slices under 0.8 mm pixels), so every panel is resampled to square
display pixels from the voxel spacing. The anomaly map is coloured on the scale fixed by the caller
(the map's full range), never stretched per slice, and panels are encoded as PNG: lossless, so review
images carry exactly the grey levels and colours computed here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from medclip_ad.inference.overlay import OverlayStyle, overlay
from medclip_ad.inference.volume import PLANE_NORMALS, slice_axis_for_plane
from PIL import Image

# Per plane, the RAS world axis that runs left to right on screen and the one that runs top to bottom,
# each with the sign of the world direction it runs along (-1: towards decreasing R, A or S).
SCREEN_AXES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "axial": ((0, -1), (1, -1)),
    "coronal": ((0, -1), (2, -1)),
    "sagittal": ((1, -1), (2, -1)),
}
# The patient side each RAS world axis points to, in its positive and its negative direction.
WORLD_AXIS_LETTERS: tuple[tuple[str, str], ...] = (("R", "L"), ("A", "P"), ("S", "I"))

# Panels are drawn with their longer side between these many pixels: small scans are enlarged to be
# readable, large ones reduced to fit beside each other (Streamlit itself would re-encode wider images).
MIN_DISPLAY_SIDE: int = 512
MAX_DISPLAY_SIDE: int = 1024


@dataclass(frozen=True)
class PlaneLayout:
    """How one plane of a volume maps onto the screen: which array axes become rows and columns,
    whether they run backwards, and the millimetres each step covers."""

    plane: str
    slice_axis: int
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    row_mm: float
    col_mm: float


@dataclass(frozen=True)
class ScreenLabels:
    """The patient side at each screen edge, shown beside the image so orientation is never guessed."""

    left: str
    right: str
    top: str
    bottom: str


def plane_layout(plane: str, affine: np.ndarray | None) -> PlaneLayout:
    """Place a plane of an (I, J, K) volume on screen in radiological orientation, from its RAS affine.

    The in-plane array axis closest to the plane's horizontal world axis becomes the columns, the other
    the rows; an axis runs backwards when its world direction opposes the screen's.
    """
    rotation = np.eye(3) if affine is None else np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(rotation, axis=0)
    cosines = rotation / spacing
    slice_axis = slice_axis_for_plane(plane, affine)
    in_plane = [axis for axis in range(3) if axis != slice_axis]
    (world_h, sign_h), (world_v, sign_v) = SCREEN_AXES[plane]
    col_axis = max(in_plane, key=lambda axis: abs(cosines[world_h, axis]))
    row_axis = next(axis for axis in in_plane if axis != col_axis)
    return PlaneLayout(
        plane=plane,
        slice_axis=slice_axis,
        row_axis=row_axis,
        col_axis=col_axis,
        flip_rows=bool(np.sign(cosines[world_v, row_axis]) == -sign_v),
        flip_cols=bool(np.sign(cosines[world_h, col_axis]) == -sign_h),
        row_mm=float(spacing[row_axis]),
        col_mm=float(spacing[col_axis]),
    )


def image_layout(spacing: tuple[float, ...] = ()) -> PlaneLayout:
    """A 2-D image is shown as stored: rows down, columns across, at its pixel spacing (square if unknown)."""
    row_mm, col_mm = (tuple(spacing[:2]) if len(spacing) >= 2 else (1.0, 1.0))
    return PlaneLayout("image", slice_axis=-1, row_axis=0, col_axis=1, flip_rows=False, flip_cols=False,
                       row_mm=float(row_mm), col_mm=float(col_mm))


def screen_labels(plane: str) -> ScreenLabels:
    """The patient sides at the screen edges of a plane drawn by `plane_layout`."""
    (world_h, sign_h), (world_v, sign_v) = SCREEN_AXES[plane]

    def towards(world: int, sign: int) -> str:
        return WORLD_AXIS_LETTERS[world][0 if sign > 0 else 1]

    return ScreenLabels(left=towards(world_h, -sign_h), right=towards(world_h, sign_h),
                        top=towards(world_v, -sign_v), bottom=towards(world_v, sign_v))


def extract_slice(volume: np.ndarray, layout: PlaneLayout, index: int) -> np.ndarray:
    """Slice `index` along the layout's slice axis as a (rows, columns) array in screen orientation.

    For a 2-D image layout the image itself is returned (colour channels kept).
    """
    if layout.slice_axis < 0:
        return np.asarray(volume)
    cut = np.take(volume, index, axis=layout.slice_axis)
    remaining = [axis for axis in range(3) if axis != layout.slice_axis]
    if remaining.index(layout.row_axis) == 1:
        cut = cut.T
    if layout.flip_rows:
        cut = cut[::-1, :]
    if layout.flip_cols:
        cut = cut[:, ::-1]
    return np.ascontiguousarray(cut)


def slice_position_mm(affine: np.ndarray | None, shape: tuple[int, ...], layout: PlaneLayout, index: int) -> float:
    """World coordinate (mm along the plane's normal) of a slice's centre: the number radiologists
    compare between series, unlike array indices."""
    if affine is None or layout.slice_axis < 0:
        return float(index)
    voxel = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    voxel[layout.slice_axis] = index
    world = np.asarray(affine, dtype=np.float64) @ np.append(voxel, 1.0)
    return float(world[PLANE_NORMALS[layout.plane]])


def display_shape(rows: int, cols: int, layout: PlaneLayout) -> tuple[int, int]:
    """(height, width) in display pixels with the physical aspect of the slice.

    The slice is measured in units of its finer spacing, then scaled so the longer side lies between
    MIN_DISPLAY_SIDE and MAX_DISPLAY_SIDE.
    """
    finest = min(layout.row_mm, layout.col_mm)
    height = rows * layout.row_mm / finest
    width = cols * layout.col_mm / finest
    longest = max(height, width)
    scale = float(np.clip(longest, MIN_DISPLAY_SIDE, MAX_DISPLAY_SIDE)) / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def resample(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to (height, width): uint8 grey or RGB stays uint8, anything else becomes float32."""
    height, width = shape
    if array.shape[:2] == (height, width):
        return array
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR))
    floats = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    return np.asarray(floats.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def compose_panels(image: np.ndarray, anomaly_map: np.ndarray | None, style: OverlayStyle,
                   shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """The scan panel and the overlay panel, both (height, width, 3) uint8 at the display size.

    `image` is the 8-bit slice, `anomaly_map` the matching map slice in map units (None before
    inference); `style.vmax` fixes the colour scale, so equal values get equal colours on every slice.
    """
    scan = resample(image, shape)
    scan_rgb = np.repeat(scan[:, :, None], 3, axis=2) if scan.ndim == 2 else scan
    if anomaly_map is None:
        return scan_rgb, None
    return scan_rgb, overlay(scan, resample(anomaly_map, shape), style)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (H, W, 3) or (H, W) uint8 image as PNG (lossless; no metadata, so no identifiers)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
    return buffer.getvalue()
