"""2-D images into a `Scan`: Pillow as MONAI's `PILReader` uses it (open, convert, `np.asarray`; called
directly, so reading never imports MONAI and torch), and tifffile for the TIFFs Pillow would truncate to
8 bits (16-bit colour). Values are kept as stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medclip_ad.io.discovery import CaseSource
from medclip_ad.io.read_checks import READ_ERRORS, check_not_all_nan, check_size, fail
from medclip_ad.io.scan import Scan

# Pillow modes whose values are kept as stored; every other mode is converted the way the reference
# pipeline's `Image.convert("RGB")` would see it (palette expanded, alpha dropped), to grey if it has
# no colour.
_KEPT_PIL_MODES = frozenset({"L", "RGB", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_GREY_PIL_MODES = frozenset({"1", "LA", "La"})
_TIFF_SUFFIXES = (".tif", ".tiff")


def read_image(source: CaseSource) -> Scan:
    """A 2-D image as (H, W) or (H, W, 3) in row/column order, with its stored values and bit depth."""
    path = source.location
    try:
        if path.name.lower().endswith(_TIFF_SUFFIXES) and _tiff_needs_tifffile(path):
            array, file_format, mode = _read_tiff(path), "TIFF", "tifffile"
        else:
            array, file_format, mode = _read_with_pil(path)
    except (Image.DecompressionBombError, *READ_ERRORS) as exc:
        raise fail(path, "unreadable image file", exc) from exc
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise fail(path, f"image of shape {array.shape} is neither grey-level nor RGB")
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))
    check_not_all_nan(path, array)
    return Scan(
        name=source.name,
        source=path,
        kind="image",
        array=array,
        modality=None,
        spacing=(1.0, 1.0),
        metadata={"format": file_format, "mode": mode, "bit_depth": int(array.dtype.itemsize * 8)},
    )


def _read_with_pil(path: Path) -> tuple[np.ndarray, str, str]:
    """Decode with Pillow after checking the size in the (lazy) header; the format and mode are those of the
    image handed on, as MONAI's PILReader reports them (a converted image has no format: "none")."""
    image = _pil_converter(path)(Image.open(path))
    return np.asarray(image), str(image.format) if image.format else "none", str(image.mode)


def _pil_converter(path: Path) -> Callable[[Image.Image], Image.Image]:
    """Size check, then the reference pipeline's view of modes it would convert (palette, alpha, 1-bit)."""

    def convert(image: Image.Image) -> Image.Image:
        check_size(path, (image.height, image.width))
        if image.mode in _KEPT_PIL_MODES:
            return image
        return image.convert("L" if image.mode in _GREY_PIL_MODES else "RGB")

    return convert


def _tiff_needs_tifffile(path: Path) -> bool:
    """Pillow keeps 16-bit grey TIFFs but truncates 16-bit colour ones; tifffile keeps everything."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        check_size(path, page.shape[:2] if page.axes.startswith("YX") else page.shape[-2:])
        series = tif.series[0]
        stacked = [f"{axis}={size}" for axis, size in zip(series.axes, series.shape) if axis not in "YXS" and size > 1]
        if stacked:
            raise fail(path, f"TIFF holds a stack of images ({', '.join(stacked)}, axes {series.axes}); "
                             "medclip-ad reads one 2-D image per file")
        return page.samplesperpixel > 1 and page.bitspersample > 8


def _read_tiff(path: Path) -> np.ndarray:
    """The first page of a TIFF, samples last."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        array = page.asarray()
        return np.moveaxis(array, 0, -1) if page.axes.startswith("S") else array
