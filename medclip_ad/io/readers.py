"""Read one case (a DICOM series or file, a NIfTI file, a 2-D image) into a `Scan`, geometry intact.

Pixel decoding and geometry come from MONAI's image readers, never from hand-written parsing:
`ITKReader` (ITK/GDCM, which decodes every DICOM transfer syntax and handles multi-frame files) for
DICOM, `PydicomReader` for the 16-bit colour DICOM ITK's wrapping lacks, `NibabelReader` for NIfTI,
`PILReader` for 2-D images, and tifffile for the TIFFs Pillow would truncate to 8 bits (16-bit colour).
Array layouts and affines follow MONAI's convention (RAS world millimetres; DICOM volumes as (column,
row, slice)), so a map with the scan's shape, saved with `scan.affine`, lies exactly on the input. GDCM
inverts MONOCHROME1 data (radiographs where low values are bright), so grey-level arrays always read
bright = dense; the metadata says so (`display_inverted`) for anyone comparing with the raw pixels.

Every failure a user can cause becomes a `UserInputError` whose one line names the file and the problem.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pydicom
import tifffile
from monai.data import ITKReader, NibabelReader, PILReader, PydicomReader
from nibabel.filebasedimages import ImageFileError
from PIL import Image

from medclip_ad.errors import UserInputError
from medclip_ad.io.discovery import CaseSource, dicom_pixel_shortfall, discover_cases, read_dicom_header
from medclip_ad.io.scan import Scan

# Inputs larger than this many voxels (pixels for 2-D images) are refused before their pixels are
# decoded: 2**29 float32 voxels are 2 GiB, e.g. 512 x 512 x 2048 slices or a 23k x 23k image.
MAX_VOXELS: int = 2**29

# Slices of a series must be evenly spaced to within this fraction of their median spacing; otherwise
# a slice is missing (or duplicated) and no single affine can place them all.
SLICE_SPACING_TOLERANCE: float = 0.01
# Orientation cosines of the slices of one series may differ by this much (rounding in the headers).
ORIENTATION_TOLERANCE: float = 1e-3
# Slices closer than this along the normal (mm) occupy the same position.
SAME_POSITION_MM: float = 1e-3

# Header fields that identify the patient: kept only under `metadata["patient"]`, so outputs and
# viewers can leave them out.
PATIENT_FIELDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "InstitutionName",
    "ReferringPhysicianName",
)

# Pillow modes whose values are kept as stored; every other mode is converted the way the reference
# pipeline's `Image.convert("RGB")` would see it (palette expanded, alpha dropped), to grey if it has
# no colour.
_KEPT_PIL_MODES = frozenset({"L", "RGB", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_GREY_PIL_MODES = frozenset({"1", "LA", "La"})
_TIFF_SUFFIXES = (".tif", ".tiff")

# ITK errors start with the C++ source location and a class/address prefix; users need the rest.
_SOURCE_LOCATION = re.compile(r"\.(cxx|hxx|cpp|h):\d+:?$")
_ITK_ERROR_PREFIX = re.compile(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ")

# What reading libraries raise on files that are not what they claim or are cut short.
_READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError, IndexError, TypeError, zlib.error)


def read_case(source: CaseSource, volume_index: int | None = None) -> Scan:
    """Read a case into a `Scan` (stored values, geometry, modality, provenance).

    `volume_index` picks one volume of a 4-D NIfTI file (0-based) and is ignored for 3-D inputs, so one
    option can apply to a whole folder of mixed inputs.
    """
    if source.kind == "nifti":
        return _read_nifti(source, volume_index)
    if source.kind == "image":
        return _read_image(source)
    return _read_dicom(source)


def read_study(path: Path, volume_index: int | None = None) -> Scan:
    """The one study at `path` (a NIfTI file, a DICOM file, or a folder holding one DICOM series).

    For manifest entries, which name exactly one study: a folder with several series is an error.
    """
    sources, problems = discover_cases([path])
    if problems:
        raise UserInputError(str(problems[0]))
    if len(sources) != 1:
        raise UserInputError(f"{path}: holds {len(sources)} studies (series or files); a volume entry names one")
    return read_case(sources[0], volume_index)


def nifti_volume_count(source: CaseSource) -> int:
    """How many 3-D volumes a case holds: more than one only for a 4-D NIfTI file (read from its header).

    An unreadable header counts as one: reading the case then reports what is wrong with the file.
    """
    if source.kind != "nifti":
        return 1
    try:
        shape = nib.load(str(source.location)).shape
    except (ImageFileError, *_READ_ERRORS):
        return 1
    return int(shape[3]) if len(shape) == 4 and shape[3] > 1 else 1


def _fail(path: Path, problem: str, exc: BaseException | None = None) -> UserInputError:
    """The one-line error for `path`, with the library's first line of explanation when there is one."""
    reason = ""
    if exc is not None:
        lines = (_ITK_ERROR_PREFIX.sub("", line.strip()) for line in str(exc).splitlines())
        useful = next((line for line in lines if line and not _SOURCE_LOCATION.search(line)), type(exc).__name__)
        reason = f" ({useful[:160]})"
    return UserInputError(f"{path}: {problem}{reason}")


def _check_size(path: Path, shape: Sequence[int]) -> None:
    """Refuse inputs too large to hold, before any pixel is decoded; and empty ones."""
    count = int(np.prod([int(s) for s in shape], dtype=np.int64))
    if count == 0:
        raise _fail(path, f"holds no pixels (shape {tuple(int(s) for s in shape)})")
    if count > MAX_VOXELS:
        raise _fail(path, f"too large: {count:,} voxels, the limit is {MAX_VOXELS:,}")


def _check_not_all_nan(path: Path, array: np.ndarray) -> None:
    """A volume without a single finite value has nothing to look at; partial NaN/Inf is fine."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).any():
        raise _fail(path, "every voxel is NaN or infinite")


def _spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size in millimetres along each array axis: the lengths of the affine's columns."""
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))


# --- DICOM ------------------------------------------------------------------------------------------


def _read_dicom(source: CaseSource) -> Scan:
    """A grey-level DICOM series or file as a (column, row, slice) float32 volume; colour as an image."""
    headers = [_dicom_header(p) for p in source.paths]
    first = headers[0]
    frames = int(first.get("NumberOfFrames", 1) or 1)
    _check_size(source.location, (int(first.Rows), int(first.Columns), frames * len(headers)))
    if int(first.get("SamplesPerPixel", 1)) > 1:
        return _read_dicom_colour(source, first, frames)
    if len(headers) == 1:
        paths = list(source.paths)
        array, affine = _itk_volume(paths, source.location)
    else:
        order, step = _slice_order(headers, source.location)
        paths = [source.paths[i] for i in order]
        headers = [headers[i] for i in order]
        array, affine = _itk_volume(paths, source.location)
        affine[:3, 2] = step * np.array([-1.0, -1.0, 1.0])  # the measured slice step, DICOM LPS to RAS
    _check_not_all_nan(source.location, array)
    return Scan(
        name=source.name,
        source=source.location,
        kind="volume",
        array=array,
        affine=affine,
        modality=str(first.get("Modality", "")) or None,
        slice_axis=2,
        spacing=_spacing(affine),
        metadata=_dicom_metadata(headers[0], paths),
    )


def _dicom_header(path: Path) -> pydicom.Dataset:
    """The header of one DICOM image file, checked to be followed by all of its pixel data."""
    try:
        ds = read_dicom_header(path)
    except (pydicom.errors.InvalidDicomError, *_READ_ERRORS) as exc:
        raise _fail(path, "not a readable DICOM file", exc) from exc
    shortfall = dicom_pixel_shortfall(ds, path)
    if shortfall:
        raise _fail(path, shortfall)
    try:  # later steps take these as integers
        [int(ds.get(name, 1) or 1) for name in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel")]
    except (TypeError, ValueError) as exc:
        raise _fail(path, "invalid DICOM header value", exc) from exc
    return ds


def _slice_order(headers: list[pydicom.Dataset], location: Path) -> tuple[np.ndarray, np.ndarray]:
    """Slice order along the slice normal (ascending, as ITK expects) and the mean step between slices.

    Positions are ImagePositionPatient projected on the normal of ImageOrientationPatient; file names
    and InstanceNumbers are ignored because neither reliably follows anatomy.
    """
    try:
        orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers]).reshape(-1, 6)
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers]).reshape(-1, 3)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _fail(location, "DICOM files without a valid slice position/orientation cannot be stacked", exc) from exc
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise _fail(location, "the slices of this series have different orientations")
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) > 1:
        raise _fail(location, "the slices of this series have different matrix sizes")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    gaps = np.diff(distance[order])
    if gaps.min() < SAME_POSITION_MM:
        repeats = int(np.sum(gaps < SAME_POSITION_MM))
        raise _fail(location, f"{repeats} slices repeat a position (several echoes or time points in one series?)")
    median = float(np.median(gaps))
    if float(gaps.max() - gaps.min()) > SLICE_SPACING_TOLERANCE * median:
        raise _fail(
            location,
            f"slice spacing is uneven ({gaps.min():.3g} to {gaps.max():.3g} mm): a slice is missing or extra",
        )
    step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    return order, step


def _itk_volume(paths: list[Path], location: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode slices (in the given order) with ITK through MONAI: float32 array and RAS affine.

    The array is MONAI's transposed view of ITK's buffer, not a copy: copying into C order would cost
    seconds and a second volume of memory, and in this layout each slice (`array[:, :, k]`) is one
    contiguous block, which is how slice-wise inference reads it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ITK's SWIG wrappers warn when first loaded
            reader = ITKReader(pixel_type=itk.F)
            image = reader.read(paths[0]) if len(paths) == 1 else itk.imread([str(p) for p in paths], itk.F)
            array, meta = reader.get_data(image)
    except _READ_ERRORS as exc:
        raise _fail(location, "could not decode the DICOM pixel data (corrupt or truncated?)", exc) from exc
    return np.asarray(array, dtype=np.float32), np.array(meta["affine"], dtype=np.float64)


def _read_dicom_colour(source: CaseSource, header: pydicom.Dataset, frames: int) -> Scan:
    """A single colour frame (ultrasound, secondary capture, photo) is a 2-D RGB image, not a volume.

    8-bit colour goes through GDCM (ITKReader), which decodes every codec; ITK's Python wrapping has no
    16-bit colour type (and searching for one loads every ITK module, for seconds), so deeper colour
    goes through pydicom (PydicomReader).
    """
    path = source.location
    if len(source.paths) > 1 or frames > 1:
        raise _fail(path, "multi-frame colour DICOM (e.g. an ultrasound clip) is not supported")
    decode = _decode_colour_with_itk if int(header.get("BitsAllocated", 8)) <= 8 else _decode_colour_with_pydicom
    try:
        rgb = decode(path)
    except _READ_ERRORS as exc:
        raise _fail(path, "could not decode the colour DICOM pixel data", exc) from exc
    return Scan(
        name=source.name,
        source=path,
        kind="image",
        array=rgb,
        modality=str(header.get("Modality", "")) or None,
        metadata=_dicom_metadata(header, [path]),
    )


def _decode_colour_with_itk(path: Path) -> np.ndarray:
    """(H, W, 3) from MONAI's ITKReader, whose layout for one colour frame is (W, H, 1, 3)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reader = ITKReader()
        array, _ = reader.get_data(reader.read(path))
    return np.ascontiguousarray(np.asarray(array).reshape(array.shape[0], array.shape[1], 3).transpose(1, 0, 2))


def _decode_colour_with_pydicom(path: Path) -> np.ndarray:
    """(H, W, 3) from MONAI's PydicomReader in row/column order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no patient geometry: MONAI warns about the affine
        reader = PydicomReader(swap_ij=False)
        array, _ = reader.get_data(reader.read(path))
    return np.ascontiguousarray(array)


def _dicom_metadata(header: pydicom.Dataset, paths: list[Path]) -> dict:
    """What later steps may need from the headers, as plain JSON types; patient fields apart."""
    center, width = _first_number(header.get("WindowCenter")), _first_number(header.get("WindowWidth"))
    windows = {"window_center": center, "window_width": width} if center is not None and width else {}
    return {
        "format": "dicom",
        "series_uid": str(header.get("SeriesInstanceUID", "")),
        "study_uid": str(header.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(header.get("FrameOfReferenceUID", "")),
        "sop_class_uid": str(header.get("SOPClassUID", "")),
        "series_number": str(header.get("SeriesNumber", "") or ""),
        "series_description": str(header.get("SeriesDescription", "") or ""),
        "photometric_interpretation": str(header.get("PhotometricInterpretation", "")),
        "display_inverted": header.get("PhotometricInterpretation") == "MONOCHROME1",
        **windows,
        "files": [str(p) for p in paths],
        "patient": {f: str(header.get(f, "") or "") for f in PATIENT_FIELDS if f in header},
    }


def _first_number(value: object) -> float | None:
    """The default (first) of a possibly multi-valued number; None when absent or unparsable."""
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --- NIfTI ------------------------------------------------------------------------------------------


def _read_nifti(source: CaseSource, volume_index: int | None) -> Scan:
    """A NIfTI volume in the file's own voxel order with the file's affine; one volume of a 4-D file."""
    path = source.location
    reader = NibabelReader()
    try:
        image = reader.read(path)
    except (ImageFileError, *_READ_ERRORS) as exc:
        raise _fail(path, "not a readable NIfTI file", exc) from exc
    file_shape = tuple(int(s) for s in image.shape)
    shape = file_shape
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a 3-D volume stored as 4-D
        shape = shape[:-1]
    if len(shape) > 4:
        raise _fail(path, f"{len(shape)}-D NIfTI {shape} is not a scalar volume")
    if len(shape) == 4:
        image = _pick_volume(path, image, shape, volume_index)
    volume_shape = (shape[:3] + (1, 1))[:3]  # a 2-D file becomes a one-slice volume
    _check_size(path, volume_shape)
    codes = {"sform_code": int(image.header["sform_code"]), "qform_code": int(image.header["qform_code"])}
    try:
        array, meta = reader.get_data(image)
        array = np.asarray(array, dtype=np.float32).reshape(volume_shape)
    except (ImageFileError, *_READ_ERRORS) as exc:
        raise _fail(path, "truncated or corrupt NIfTI file", exc) from exc
    _check_not_all_nan(path, array)
    affine = np.array(meta["affine"], dtype=np.float64)
    return Scan(
        name=source.name,
        source=path,
        kind="volume",
        array=array,
        affine=affine,
        modality=None,
        slice_axis=2,  # converters (dcm2niix) store slices along the third axis
        spacing=_spacing(affine),
        metadata={
            "format": "nifti",
            "file_shape": list(file_shape),
            "volume_index": volume_index if len(shape) == 4 else None,
            **codes,
        },
    )


def _pick_volume(path: Path, image: nib.Nifti1Image, shape: tuple[int, ...], index: int | None) -> nib.Nifti1Image:
    """One 3-D volume of a 4-D file, sliced lazily so the others are never loaded."""
    count = shape[3]
    if index is None:
        raise _fail(path, f"4-D NIfTI with {count} volumes; choose one with --volume-index (0 to {count - 1})")
    if not 0 <= index < count:
        raise _fail(path, f"--volume-index {index} is out of range: the file has volumes 0 to {count - 1}")
    return image.slicer[:, :, :, index]


# --- 2-D images -------------------------------------------------------------------------------------


def _read_image(source: CaseSource) -> Scan:
    """A 2-D image as (H, W) or (H, W, 3) in row/column order, with its stored values and bit depth."""
    path = source.location
    try:
        if path.name.lower().endswith(_TIFF_SUFFIXES) and _tiff_needs_tifffile(path):
            array, file_format, mode = _read_tiff(path), "TIFF", "tifffile"
        else:
            array, file_format, mode = _read_with_pil(path)
    except (Image.DecompressionBombError, *_READ_ERRORS) as exc:
        raise _fail(path, "unreadable image file", exc) from exc
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise _fail(path, f"image of shape {array.shape} is neither grey-level nor RGB")
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("="), copy=False))
    _check_not_all_nan(path, array)
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
    """Decode with MONAI's PILReader after checking the size in the (lazy) header."""
    reader = PILReader(converter=_pil_converter(path), reverse_indexing=False)
    image = reader.read(path)
    array, meta = reader.get_data(image)
    return np.asarray(array), str(meta["format"]), str(meta["mode"])


def _pil_converter(path: Path) -> Callable[[Image.Image], Image.Image]:
    """Size check, then the reference pipeline's view of modes it would convert (palette, alpha, 1-bit)."""

    def convert(image: Image.Image) -> Image.Image:
        _check_size(path, (image.height, image.width))
        if image.mode in _KEPT_PIL_MODES:
            return image
        return image.convert("L" if image.mode in _GREY_PIL_MODES else "RGB")

    return convert


def _tiff_needs_tifffile(path: Path) -> bool:
    """Pillow keeps 16-bit grey TIFFs but truncates 16-bit colour ones; tifffile keeps everything."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        _check_size(path, page.shape[:2] if page.axes.startswith("YX") else page.shape[-2:])
        return page.samplesperpixel > 1 and page.bitspersample > 8


def _read_tiff(path: Path) -> np.ndarray:
    """The first page of a TIFF, samples last."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        array = page.asarray()
        return np.moveaxis(array, 0, -1) if page.axes.startswith("S") else array
