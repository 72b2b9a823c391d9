"""What a DICOM image header promises, checked before any pixel is decoded.

A header can promise rows, columns, frames or bits its pixel data does not hold (a decoder then reads
past the end, into uninitialised memory), name a transfer syntax its pixel data does not follow, or
place the image with cosines and spacings no map can be placed with. Each is refused naming the file,
during discovery and again when reading, so such a file costs no inference.
"""

from __future__ import annotations

import math

import pydicom
from pydicom.uid import UID

# Pixel data elements: Pixel Data, Float Pixel Data, Double Float Pixel Data.
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PHOTOMETRIC_INTERPRETATIONS = frozenset({
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
    "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB"})
# Direction cosines are unit vectors at right angles; headers round them, so allow this much.
_COSINE_TOLERANCE = 1e-2


def dicom_image_problem(ds: pydicom.Dataset) -> str:
    """Why an image header is impossible, or its native pixel data too short for it; '' when all is well."""
    try:
        rows, columns, frames, samples, bits = _image_attributes(ds)
    except (TypeError, ValueError, AttributeError) as exc:
        return f"invalid image header value ({next(iter(str(exc).splitlines()), type(exc).__name__)[:120]})"
    if rows < 1 or columns < 1:
        return f"image header gives {rows} rows x {columns} columns"
    if frames < 1:
        return f"NumberOfFrames is {frames}"
    if samples not in (1, 3):
        return f"SamplesPerPixel is {samples} (grey-level images have 1, colour 3)"
    if bits < 1 or (bits != 1 and (bits % 8 or bits > 64)):
        return f"BitsAllocated is {bits} (1 or a multiple of 8 up to 64)"
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
    if photometric and photometric not in _PHOTOMETRIC_INTERPRETATIONS:
        return f"unknown PhotometricInterpretation {photometric!r}"
    rescale = _rescale_problem(ds)
    if rescale:
        return rescale
    return _pixel_data_problem(ds, rows, columns, frames, samples, bits)


def dicom_geometry_problem(ds: pydicom.Dataset) -> str:
    """Why the patient geometry (orientation, position, pixel spacing) cannot place the image; '' when it can."""
    try:
        orientation = _numbers(ds, "ImageOrientationPatient", 6)
        position = _numbers(ds, "ImagePositionPatient", 3)
        pixel_spacing = _numbers(ds, "PixelSpacing", 2)
    except (TypeError, ValueError) as exc:
        return f"unreadable patient geometry ({str(exc)[:120]})"
    if orientation is not None and not all(map(math.isfinite, orientation)):
        return f"ImageOrientationPatient {tuple(orientation)} holds values that are not finite numbers"
    if orientation is not None:
        row, column = orientation[:3], orientation[3:]
        norms = [math.sqrt(sum(v * v for v in axis)) for axis in (row, column)]
        if any(abs(norm - 1) > _COSINE_TOLERANCE for norm in norms) or \
                abs(sum(a * b for a, b in zip(row, column))) > _COSINE_TOLERANCE:
            return (f"ImageOrientationPatient {tuple(orientation)} is not two perpendicular unit vectors "
                    "(broken geometry header)")
    if position is not None and not all(map(math.isfinite, position)):
        return f"ImagePositionPatient {tuple(position)} is not a finite position"
    # 0\0 is what uncalibrated radiographs carry (readers then assume 1 mm); anything else must be a size.
    if pixel_spacing is not None and not all(math.isfinite(v) and v >= 0 for v in pixel_spacing):
        return f"PixelSpacing {tuple(pixel_spacing)} must be non-negative numbers"
    return ""


def _image_attributes(ds: pydicom.Dataset) -> tuple[int, int, int, int, int]:
    frames = ds.get("NumberOfFrames")
    return (int(ds.Rows), int(ds.Columns), 1 if frames in (None, "") else int(frames),
            int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 16)))


def _rescale_problem(ds: pydicom.Dataset) -> str:
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            try:
                value = float(ds.get(keyword))
            except (TypeError, ValueError):
                return f"{keyword} {ds.get(keyword)!r} is not a number"
            if not math.isfinite(value) or (keyword == "RescaleSlope" and value == 0):
                return f"{keyword} is {value:g}: the stored values cannot be mapped to real values"
    return ""


def _pixel_data_problem(ds: pydicom.Dataset, rows: int, columns: int, frames: int, samples: int, bits: int) -> str:
    """Native pixel data must hold every promised frame; encapsulated syntaxes need encapsulated data."""
    element = next((ds.get_item(t, keep_deferred=True) for t in _PIXEL_DATA_TAGS if t in ds), None)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not UID(str(syntax)).is_transfer_syntax:
        return f"unknown transfer syntax {syntax}"
    if element is None:
        return ""
    syntax = UID(str(syntax)) if syntax else None
    encapsulated = element.length == _UNDEFINED_LENGTH
    if syntax is not None and syntax.is_encapsulated and not encapsulated:
        return f"the pixel data is not encapsulated as its transfer syntax ({syntax.name}) requires"
    if encapsulated or (syntax is not None and syntax.is_deflated):
        return ""  # compressed data is checked whole by its decoder; deflated data has no byte layout
    values = rows * columns * frames * samples
    needed = math.ceil(values / 8) if bits == 1 else values * bits // 8
    if element.length < needed:
        return (f"the pixel data holds {element.length} bytes, but {rows} rows x {columns} columns x {frames} "
                f"frame(s) x {samples} sample(s) at {bits} bits need {needed} (truncated, or a wrong header)")
    return ""


def _numbers(ds: pydicom.Dataset, keyword: str, count: int) -> list[float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    values = [float(v) for v in (value if isinstance(value, pydicom.multival.MultiValue) else [value])]
    if len(values) != count:
        raise ValueError(f"{keyword} has {len(values)} values, not {count}")
    return values
