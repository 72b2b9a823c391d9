"""What the viewer draws: a slice cut from a volume, oriented, sized and overlaid the way radiologists read.

Orientation is radiological and comes from `medclip_ad.io.orientation` (`plane_layout`, `extract_slice`),
the same layout the model's input slices get, so the viewer shows exactly the pictures that were scored.

Voxels are rarely cubes (4 mm slices under 0.8 mm pixels), so every panel is resampled to square
display pixels from the voxel spacing. The anomaly map is coloured on the scale fixed by the caller
(the map's full range), never stretched per slice, and panels are encoded as PNG: lossless, so review
images carry exactly the grey levels and colours computed here.

A panel leaves the viewer (PNG export, a report) without the page around it, so it carries its own
marks: the patient side at each edge, a scale bar when the pixels have a physical size, and the
random-weights mark on a map made with random CLIP weights.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from medclip_ad.config import PLANE_NORMALS
from medclip_ad.inference.overlay import OverlayStyle, overlay
from medclip_ad.io.orientation import PlaneLayout, ScreenLabels
from medclip_ad.io.scan import Scan
from PIL import Image, ImageDraw, ImageFont

# Panels are drawn with their longer side between these many pixels: small scans are enlarged to be
# readable, large ones reduced to fit beside each other (Streamlit itself would re-encode wider images).
MIN_DISPLAY_SIDE: int = 512
MAX_DISPLAY_SIDE: int = 1024
# Marks on a panel, as fractions of its shorter side: letter height and the gap to the edge.
MARK_FONT_FRACTION = 0.045
MARK_MARGIN_FRACTION = 0.015
MARK_OUTLINE_FRACTION = 0.1  # of the letter height: a dark outline keeps marks readable on bright tissue
# The scale bar is the longest of these lengths that fits in a fifth of the panel's width.
SCALE_BAR_LENGTHS_MM: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500)
SCALE_BAR_WIDTH_FRACTION = 0.2
MARK_WHITE = (255, 255, 255)
MARK_DARK = (0, 0, 0)
RANDOM_WEIGHTS_RED = (255, 32, 32)
RANDOM_WEIGHTS_MARK = "RANDOM WEIGHTS"
NO_PHYSICAL_SPACING = "no physical spacing"


@dataclass(frozen=True)
class PanelMarks:
    """What a panel carries on its own. `labels`: the patient side at each edge (None when the picture
    has no patient orientation: a photograph, an endoscopy frame). `mm_per_pixel`: a display pixel's
    size, for the scale bar (None without physical spacing). `random_weights`: the map came from random
    CLIP weights and means nothing."""

    labels: ScreenLabels | None = None
    mm_per_pixel: float | None = None
    random_weights: bool = False


def has_physical_spacing(scan: Scan) -> bool:
    """Whether the scan's pixel sizes are millimetres: volumes carry them in their affine; the 2-D image
    readers (PNG, JPEG, TIFF) give square unit pixels because those files record no spacing."""
    return scan.kind == "volume" and scan.affine is not None


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


def annotate(rgb: np.ndarray, marks: PanelMarks) -> np.ndarray:
    """The panel with its marks drawn in: orientation letters at the middle of each edge, the scale bar
    at the bottom right, the random-weights mark at the top left."""
    image = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(image)
    height, width = rgb.shape[:2]
    side = min(height, width)
    font = ImageFont.load_default(size=max(10, round(side * MARK_FONT_FRACTION)))
    margin = max(2, round(side * MARK_MARGIN_FRACTION))
    outline = max(1, round(font.size * MARK_OUTLINE_FRACTION))
    text = {"stroke_width": outline, "stroke_fill": MARK_DARK, "font": font}
    if marks.labels is not None:
        for where, anchor, letter in (((margin, height / 2), "lm", marks.labels.left),
                                      ((width - margin, height / 2), "rm", marks.labels.right),
                                      ((width / 2, margin), "mt", marks.labels.top),
                                      ((width / 2, height - margin), "mb", marks.labels.bottom)):
            draw.text(where, letter, fill=MARK_WHITE, anchor=anchor, **text)
    if marks.mm_per_pixel:
        _scale_bar(draw, width, height, margin, marks.mm_per_pixel, text)
    if marks.random_weights:
        draw.text((margin, margin), RANDOM_WEIGHTS_MARK, fill=RANDOM_WEIGHTS_RED, anchor="lt", **text)
    return np.asarray(image)


def scale_bar_mm(width_px: int, mm_per_pixel: float) -> float | None:
    """The scale bar's length: the longest round length within SCALE_BAR_WIDTH_FRACTION of the width."""
    fitting = [mm for mm in SCALE_BAR_LENGTHS_MM if mm / mm_per_pixel <= width_px * SCALE_BAR_WIDTH_FRACTION]
    return fitting[-1] if fitting else None


def _scale_bar(draw: ImageDraw.ImageDraw, width: int, height: int, margin: int, mm_per_pixel: float,
               text: dict) -> None:
    length_mm = scale_bar_mm(width, mm_per_pixel)
    if length_mm is None:
        return
    length = round(length_mm / mm_per_pixel)
    thickness = max(2, text["stroke_width"] * 2)
    right, bottom = width - margin, height - margin
    draw.rectangle((right - length, bottom - thickness, right + 1, bottom + 1), fill=MARK_DARK)
    draw.rectangle((right - length + 1, bottom - thickness + 1, right, bottom), fill=MARK_WHITE)
    draw.text((right, bottom - thickness - margin), f"{length_mm:g} mm", fill=MARK_WHITE, anchor="rb", **text)
