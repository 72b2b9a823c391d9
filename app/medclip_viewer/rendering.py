"""What the viewer draws: a slice cut from a volume, oriented, sized and overlaid the way radiologists read.

Orientation is radiological and comes from `medclip_ad.io.orientation` (`plane_layout`, `extract_slice`),
the same layout the model's input slices get, so the viewer shows exactly the pictures that were scored.

Voxels are rarely cubes (4 mm slices under 0.8 mm pixels), so every panel is resampled to square
display pixels from the voxel spacing. The anomaly map is coloured on the scale fixed by the caller
(the map's full range), never stretched per slice, and panels are encoded as PNG: lossless, so review
images carry exactly the grey levels and colours computed here.
"""

from __future__ import annotations

import io

import numpy as np
from medclip_ad.inference.overlay import OverlayStyle, overlay
from medclip_ad.config import PLANE_NORMALS
from medclip_ad.io.orientation import PlaneLayout
from PIL import Image

# Panels are drawn with their longer side between these many pixels: small scans are enlarged to be
# readable, large ones reduced to fit beside each other (Streamlit itself would re-encode wider images).
MIN_DISPLAY_SIDE: int = 512
MAX_DISPLAY_SIDE: int = 1024


def image_layout(spacing: tuple[float, ...] = ()) -> PlaneLayout:
    """A 2-D image is shown as stored: rows down, columns across, at its pixel spacing (square if unknown)."""
    row_mm, col_mm = (tuple(spacing[:2]) if len(spacing) >= 2 else (1.0, 1.0))
    return PlaneLayout("image", slice_axis=-1, row_axis=0, col_axis=1, flip_rows=False, flip_cols=False,
                       row_mm=float(row_mm), col_mm=float(col_mm))


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
