"""DICOM series and files into a `Scan`: ITK (GDCM) decodes grey-level pixels and places the slices;
pydicom decodes the 16-bit colour ITK's wrapping lacks. Volumes are (column, row, slice) in RAS millimetres
as MONAI lays them out. GDCM inverts MONOCHROME1 data, so grey-level arrays always read bright = dense; the
metadata says so (`display_inverted`).

ITK is called directly, with MONAI's `ITKReader` layout and affine (`itk_array` and `itk_affine`), so
reading a series never imports MONAI and torch; only 16-bit colour goes through MONAI's `PydicomReader`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import itk
import numpy as np
import pydicom

from medclip_ad.io.dicom_checks import dicom_geometry_problem, dicom_image_problem
from medclip_ad.io.discovery import ORIENTATION_TOLERANCE, CaseSource, dicom_pixel_shortfall, read_dicom_header
from medclip_ad.io.read_checks import READ_ERRORS, check_affine, check_not_all_nan, check_size, fail, spacing
from medclip_ad.io.scan import Scan

# Slices of a series must be evenly spaced to within this fraction of their median spacing; otherwise
# a slice is missing (or duplicated) and no single affine can place them all.
SLICE_SPACING_TOLERANCE: float = 0.01
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


def read_dicom(source: CaseSource) -> Scan:
    """A grey-level DICOM series or file as a (column, row, slice) float32 volume; colour as an image."""
    headers = [_dicom_header(p) for p in source.paths]
    first = headers[0]
    frames = int(first.get("NumberOfFrames", 1) or 1)
    check_size(source.location, (int(first.Rows), int(first.Columns), frames * len(headers)))
    if int(first.get("SamplesPerPixel", 1)) > 1:
        return _read_dicom_colour(source, first, frames)
    _check_one_patient(headers, source.location)
    if len(headers) == 1:
        paths = list(source.paths)
        array, affine = _itk_volume(paths, source.location)
    else:
        order, step = _slice_order(headers, source.location)
        paths = [source.paths[i] for i in order]
        headers = [headers[i] for i in order]
        array, affine = _itk_volume(paths, source.location)
        affine[:3, 2] = step * np.array([-1.0, -1.0, 1.0])  # the measured slice step, DICOM LPS to RAS
    check_not_all_nan(source.location, array)
    check_affine(source.location, affine)
    return Scan(
        name=source.name,
        source=source.location,
        kind="volume",
        array=array,
        affine=affine,
        modality=str(first.get("Modality", "")) or None,
        slice_axis=2,
        spacing=spacing(affine),
        metadata=_dicom_metadata(headers[0], paths),
    )


def _dicom_header(path: Path) -> pydicom.Dataset:
    """The header of one DICOM image file, checked to be followed by all of its pixel data."""
    try:
        ds = read_dicom_header(path)
    except (pydicom.errors.InvalidDicomError, *READ_ERRORS) as exc:
        raise fail(path, "not a readable DICOM file", exc) from exc
    shortfall = dicom_pixel_shortfall(ds, path) or dicom_image_problem(ds) or dicom_geometry_problem(ds)
    if shortfall:
        raise fail(path, shortfall)
    try:  # later steps take these as integers
        [int(ds.get(name, 1) or 1) for name in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel")]
    except (TypeError, ValueError) as exc:
        raise fail(path, "invalid DICOM header value", exc) from exc
    return ds


def _check_one_patient(headers: list[pydicom.Dataset], location: Path) -> None:
    """A series whose files name different patients was misfiled: stacking it would mix two people."""
    patients = sorted({str(h.get("PatientID", "") or "") for h in headers})
    if len(patients) > 1:
        named = " and ".join(repr(patient) for patient in patients[:2])
        more = f" and {len(patients) - 2} more" if len(patients) > 2 else ""
        raise fail(location, f"one series holds files of different patients (PatientID {named}{more}); "
                             f"refusing to stack a misfiled series")


def _slice_order(headers: list[pydicom.Dataset], location: Path) -> tuple[np.ndarray, np.ndarray]:
    """Slice order along the slice normal (ascending, as ITK expects) and the mean step between slices.

    Positions are ImagePositionPatient projected on the normal of ImageOrientationPatient; file names
    and InstanceNumbers are ignored because neither reliably follows anatomy.
    """
    try:
        orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers]).reshape(-1, 6)
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers]).reshape(-1, 3)
    except (AttributeError, TypeError, ValueError) as exc:
        raise fail(location, "DICOM files without a valid slice position/orientation cannot be stacked", exc) from exc
    if float(np.ptp(orientations, axis=0).max()) > ORIENTATION_TOLERANCE:
        raise fail(location, "the slices of this series have different orientations")
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) > 1:
        raise fail(location, "the slices of this series have different matrix sizes")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    gaps = np.diff(distance[order])
    if gaps.min() < SAME_POSITION_MM:
        repeats = int(np.sum(gaps < SAME_POSITION_MM))
        raise fail(location, f"{repeats} slices repeat a position (several echoes or time points in one series?)")
    median = float(np.median(gaps))
    if float(gaps.max() - gaps.min()) > SLICE_SPACING_TOLERANCE * median:
        raise fail(
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
            image = itk.imread(str(paths[0]) if len(paths) == 1 else [str(p) for p in paths], itk.F)
            array, affine = itk_array(image), itk_affine(image)
    except READ_ERRORS as exc:
        raise fail(location, "could not decode the DICOM pixel data (corrupt or truncated?)", exc) from exc
    return np.asarray(array, dtype=np.float32), np.array(affine, dtype=np.float64)


def itk_array(image) -> np.ndarray:
    """An ITK image's voxels in MONAI's layout: ITK's (slice, row, column) buffer transposed, without a copy,
    to (column, row, slice); components (colour) last."""
    view = itk.array_view_from_image(image, keep_axes=False)
    if image.GetNumberOfComponentsPerPixel() == 1:
        return view.T
    return np.moveaxis(view.T, 0, -1)


def itk_affine(image) -> np.ndarray:
    """An ITK image's voxel-to-world affine in RAS millimetres (MONAI's convention): direction times
    spacing, the origin as translation, then ITK's LPS turned to RAS by negating the first two rows."""
    direction = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=float)
    rank = min(max(direction.shape[0], 1), 3)
    affine = np.eye(rank + 1)
    affine[:rank, :rank] = direction[:rank, :rank] @ np.diag(np.asarray(image.GetSpacing(), dtype=float)[:rank])
    affine[:rank, -1] = np.asarray(image.GetOrigin(), dtype=float)[:rank]
    flip = np.ones(rank + 1)
    flip[:min(rank, 2)] = -1.0
    return np.diag(flip) @ affine


def _read_dicom_colour(source: CaseSource, header: pydicom.Dataset, frames: int) -> Scan:
    """A single colour frame (ultrasound, secondary capture, photo) is a 2-D RGB image, not a volume.

    8-bit colour goes through GDCM (ITKReader), which decodes every codec; ITK's Python wrapping has no
    16-bit colour type (and searching for one loads every ITK module, for seconds), so deeper colour
    goes through pydicom (PydicomReader).
    """
    path = source.location
    if len(source.paths) > 1 or frames > 1:
        raise fail(path, "multi-frame colour DICOM (e.g. an ultrasound clip) is not supported")
    decode = _decode_colour_with_itk if int(header.get("BitsAllocated", 8)) <= 8 else _decode_colour_with_pydicom
    try:
        rgb = decode(path)
    except READ_ERRORS as exc:
        raise fail(path, "could not decode the colour DICOM pixel data", exc) from exc
    return Scan(
        name=source.name,
        source=path,
        kind="image",
        array=rgb,
        modality=str(header.get("Modality", "")) or None,
        metadata=_dicom_metadata(header, [path]),
    )


def _decode_colour_with_itk(path: Path) -> np.ndarray:
    """(H, W, 3) from ITK, whose layout for one colour frame is (W, H, 1, 3) in MONAI's order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        array = itk_array(itk.imread(str(path)))
    return np.ascontiguousarray(np.asarray(array).reshape(array.shape[0], array.shape[1], 3).transpose(1, 0, 2))


def _decode_colour_with_pydicom(path: Path) -> np.ndarray:
    """(H, W, 3) from MONAI's PydicomReader in row/column order."""
    from monai.data import PydicomReader

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
