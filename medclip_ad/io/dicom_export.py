"""Anomaly maps back into PACS: a DICOM Parametric Map, or RGB Secondary Capture overlays.

Radiology reads images in PACS viewers, not NIfTI tools. A Parametric Map (highdicom) stores the float
map on the source series' own grid, in its frame of reference and study, frame by frame referencing the
source slices, so a viewer that supports it can fuse it with the scan. Many PACS cannot show parametric
maps; for them each overlay (scan in grey, map in colour) becomes a Secondary Capture image in the same
study. Patient and study attributes are copied from the source files themselves (by highdicom), never
from the case's metadata or anywhere else, so an output always belongs to the patient it was made from.
Every object is marked as derived research output, not for diagnosis, in a new series.

Source headers are read without their pixel data: highdicom takes geometry, identity and references
from the headers, so a 600-slice series costs no second copy of its pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from medclip_ad import __version__
from medclip_ad.errors import UserInputError
from medclip_ad.inference.overlay import OverlayStyle, overlay
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.scan import Scan
from medclip_ad.io.writers import atomic_write

# The choices of `--dicom-out`: which DICOM objects a case folder gets besides its NIfTI map.

MANUFACTURER: str = "medclip-ad"
MODEL_NAME: str = "AnomalyCLIP zero-shot anomaly detection"
# Software has no serial number, but the Enhanced General Equipment module requires one.
DEVICE_SERIAL_NUMBER: str = "0"
# Series numbers of the derived series, far above scanner numbering so they sort after the source's.
PARAMETRIC_MAP_SERIES_NUMBER: int = 9001
SECONDARY_CAPTURE_SERIES_NUMBER: int = 9002
RESEARCH_NOTICE: str = "research output, not for diagnosis"
PARAMETRIC_MAP_DESCRIPTION: str = f"medclip-ad anomaly map ({RESEARCH_NOTICE})"
SECONDARY_CAPTURE_DESCRIPTION: str = f"medclip-ad anomaly overlay ({RESEARCH_NOTICE})"
OVERLAY_COMMENT: str = (
    "Anomaly heatmap (AnomalyCLIP zero-shot, medclip-ad) drawn over the source slice; "
    f"{RESEARCH_NOTICE}."
)
# The map is a sum of per-layer anomaly probabilities: a unitless score, in UCUM's annotation form.
SCORE_UNIT = Code("{score}", "UCUM", "score")
# No standard code names this quantity, so it has one in a private coding scheme ("99" prefix), declared
# in the object's Coding Scheme Identification Sequence as the standard asks.
PRIVATE_CODING_SCHEME: str = "99MEDCLIPAD"
ANOMALY_SCORE = Code("ANOMALY_SCORE", PRIVATE_CODING_SCHEME, "Zero-shot anomaly score (AnomalyCLIP)")
MAP_LUT_LABEL: str = "ANOMALY"
MAP_LUT_EXPLANATION: str = "anomaly score: sum of per-layer anomaly probabilities"
# Map values may pass the ends of `map_range` by this fraction of its width (float rounding in resizing,
# blurring and autocast) before the range is taken to be the wrong one.
MAP_RANGE_TOLERANCE: float = 1e-4

# DICOM patient axes (LPS) as PatientOrientation letters: (negative, positive) direction per axis.
_AXIS_LETTERS: tuple[tuple[str, str], ...] = (("R", "L"), ("A", "P"), ("F", "H"))
_ORIENTATION_LETTERS = frozenset(letter for pair in _AXIS_LETTERS for letter in pair)
# Patient and study attributes highdicom reads from the first source image without a default; a
# source may leave some out, and an empty value is what the standard asks for then.
_STUDY_ATTRIBUTES: tuple[str, ...] = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_PATIENT_SEX_VALUES = frozenset(value.value for value in hd.PatientSexValues)


def write_parametric_map(
    map_volume: np.ndarray,
    scan: Scan,
    path: Path,
    *,
    map_range: tuple[float, float],
    series_description: str = PARAMETRIC_MAP_DESCRIPTION,
) -> None:
    """Save the map of a DICOM series as a float32 Parametric Map that PACS can fuse with the source.

    `map_volume` has the scan's (column, row, slice) shape; each source slice becomes one frame holding
    `map_volume[:, :, k].T`, at that slice's position and referencing its SOP instance. Frames are
    stored in highdicom's order along the slice normal (each carries its position and reference).
    `map_range` is the range the map's values can take (for volumes, [0, number of layers]): it
    bounds the real-world value mapping and sets the default display window, the same for every case.
    """
    files = dicom_source_files(scan)
    data = np.asarray(map_volume, dtype=np.float32)
    if data.shape != scan.array.shape:
        raise ValueError(f"{scan.name}: map shape {data.shape} differs from the scan's {scan.array.shape}")
    if len(files) != data.shape[2]:
        raise UserInputError(
            f"{scan.source}: a parametric map needs one DICOM file per slice (multi-frame files are not "
            "supported); use --dicom-out secondary-capture"
        )
    low, high = (float(v) for v in map_range)
    if not high > low:
        raise ValueError(f"{scan.name}: map_range {map_range} is empty")
    smallest, largest = float(np.nanmin(data)), float(np.nanmax(data))
    slack = MAP_RANGE_TOLERANCE * (high - low)
    if smallest < low - slack or largest > high + slack:
        raise ValueError(f"{scan.name}: map values {smallest:g}..{largest:g} lie outside {low:g}..{high:g}")
    sources = _shared_orientation([_study_complete(_source_header(f)) for f in files])
    if "FrameOfReferenceUID" not in sources[0]:
        raise UserInputError(
            f"{scan.source}: a parametric map needs the source's patient geometry (FrameOfReferenceUID), "
            "which it lacks; use --dicom-out secondary-capture"
        )
    try:
        parametric_map = _parametric_map(sources, data, (low, high), series_description)
    except ValueError as exc:  # what highdicom refuses in a source series the reader accepted
        raise UserInputError(f"{scan.source}: cannot write a DICOM parametric map ({exc})") from exc
    with atomic_write(path) as temporary:
        parametric_map.save_as(temporary)


def _parametric_map(
    sources: list[Dataset],
    data: np.ndarray,
    map_range: tuple[float, float],
    series_description: str,
) -> hd.pm.ParametricMap:
    """The Parametric Map object: one frame per source slice, windowed to the map's full range."""
    low, high = map_range
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=MAP_LUT_LABEL,
        lut_explanation=MAP_LUT_EXPLANATION,
        unit=SCORE_UNIT,
        value_range=(low, high),
        slope=1.0,
        intercept=0.0,
        quantity_definition=ANOMALY_SCORE,
    )
    return hd.pm.ParametricMap(
        source_images=sources,
        pixel_array=np.ascontiguousarray(data.transpose(2, 1, 0)),
        series_instance_uid=hd.UID(),
        series_number=PARAMETRIC_MAP_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        device_serial_number=DEVICE_SERIAL_NUMBER,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=(low + high) / 2, window_width=high - low)],
        content_description=RESEARCH_NOTICE,
        content_label=MAP_LUT_LABEL,
        series_description=series_description,
        coding_schemes=[CodingSchemeIdentificationItem(PRIVATE_CODING_SCHEME, name=f"{MANUFACTURER} codes")],
    )


def source_slice_overlays(
    scan: Scan, map_volume: np.ndarray, slices: Sequence[int], mapping: IntensityMapping, style: OverlayStyle
) -> list[tuple[int, np.ndarray]]:
    """RGB overlays of whole source slices (the acquisition plane), as `write_secondary_capture` takes them.

    Secondary Captures must show source slices, whatever axis inference ran along, so PACS can place
    them next to the images they were drawn from.
    """
    return [
        (int(k), overlay(mapping(scan.array[:, :, k].T), np.asarray(map_volume)[:, :, k].T, style)) for k in slices
    ]


def write_secondary_capture(
    overlays: Sequence[tuple[int, np.ndarray]],
    scan: Scan,
    folder: Path,
    *,
    series_description: str = SECONDARY_CAPTURE_DESCRIPTION,
) -> list[Path]:
    """Save (source slice index, RGB uint8 (rows, columns, 3)) overlays as one Secondary Capture each.

    For PACS without parametric-map support: one new series in the source's study, patient and study
    copied from each overlay's source file, which is referenced; files are `folder/sc_<slice>.dcm`.
    """
    files = dicom_source_files(scan)
    expected = (scan.array.shape[1], scan.array.shape[0], 3)
    series_uid = hd.UID()
    written: list[Path] = []
    for number, (index, rgb) in enumerate(overlays, start=1):
        frame = np.asarray(rgb)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise ValueError(
                f"{scan.name}: overlay of slice {index} is {frame.shape} {frame.dtype}, expected {expected} uint8"
            )
        if not 0 <= index < scan.array.shape[2]:
            raise ValueError(f"{scan.name}: slice {index} is outside the scan's {scan.array.shape[2]} slices")
        source_file = files[index] if len(files) == scan.array.shape[2] else files[0]
        source = _study_complete(_source_header(source_file))
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=frame,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=SECONDARY_CAPTURE_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer=MANUFACTURER,
            pixel_spacing=_pixel_spacing(source),
            patient_orientation=_patient_orientation(source, source_file),
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
            series_description=series_description,
            manufacturer_model_name=MODEL_NAME,
            software_versions=__version__,
        )
        image.ImageComments = OVERLAY_COMMENT
        image.DerivationDescription = OVERLAY_COMMENT
        image.BurnedInAnnotation = "NO"
        image.SourceImageSequence = [_reference(source)]
        path = Path(folder) / f"sc_{index:04d}.dcm"
        with atomic_write(path) as temporary:
            image.save_as(temporary)
        written.append(path)
    return written


def dicom_source_files(scan: Scan) -> list[Path]:
    """The scan's source DICOM files in slice order; a clear error for anything not read from DICOM.

    Callers may check a case with it before inference, so a wrong input costs no model time.
    """
    file_format = scan.metadata.get("format")
    if file_format != "dicom":
        raise UserInputError(f"{scan.source}: --dicom-out needs a DICOM input, this case is {file_format or scan.kind}")
    if scan.kind != "volume":
        raise UserInputError(f"{scan.source}: --dicom-out needs a grey-level DICOM input, this is a colour image")
    return [Path(f) for f in scan.metadata["files"]]


def _source_header(path: Path) -> Dataset:
    """One source file's header, read again from disk so identifiers come from the source only."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise UserInputError(f"{path}: source DICOM file is no longer readable ({exc})") from exc


def _study_complete(header: Dataset) -> Dataset:
    """The header as highdicom accepts it: patient/study attributes it leaves out, and a PatientSex
    outside the standard's M/F/O (scanners write "U"), become empty values, never invented ones."""
    for keyword in _STUDY_ATTRIBUTES:
        if keyword not in header:
            setattr(header, keyword, None)
    if header.PatientSex and header.PatientSex not in _PATIENT_SEX_VALUES:
        header.PatientSex = None
    return header


def _shared_orientation(headers: list[Dataset]) -> list[Dataset]:
    """The headers with the first slice's ImageOrientationPatient on every slice.

    The reader accepted the series because its orientations agree to within rounding; highdicom
    requires them identical, character for character.
    """
    if "ImageOrientationPatient" in headers[0]:
        for header in headers[1:]:
            header.ImageOrientationPatient = headers[0].ImageOrientationPatient
    return headers


def _image_attribute(header: Dataset, keyword: str, functional_group: str) -> object:
    """A geometry attribute of a single-frame header, or from the shared functional groups of an
    enhanced multi-frame one (where the standard moves it); None when neither has it."""
    if keyword in header:
        return header.get(keyword)
    shared = header.get("SharedFunctionalGroupsSequence")
    group = shared[0].get(functional_group) if shared else None
    return group[0].get(keyword) if group else None


def _pixel_spacing(header: Dataset) -> tuple[float, float] | None:
    """The source's in-plane pixel spacing (row, column) in mm, when it has one."""
    spacing = _image_attribute(header, "PixelSpacing", "PixelMeasuresSequence")
    return (float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2 else None


def _patient_orientation(header: Dataset, path: Path) -> tuple[str, str]:
    """PatientOrientation (row direction, column direction) as the nearest patient axes.

    From ImageOrientationPatient when present, else the source's own PatientOrientation.
    """
    cosines = _image_attribute(header, "ImageOrientationPatient", "PlaneOrientationSequence")
    if cosines is not None and len(cosines) == 6:
        return _nearest_axis_letter(np.array(cosines[:3], float)), _nearest_axis_letter(np.array(cosines[3:], float))
    stated = header.get("PatientOrientation")
    if stated is not None and len(stated) == 2 and all(str(v)[:1] in _ORIENTATION_LETTERS for v in stated):
        return str(stated[0])[0], str(stated[1])[0]
    raise UserInputError(
        f"{path}: no ImageOrientationPatient or PatientOrientation, so a secondary capture cannot state the "
        "patient orientation"
    )


def _nearest_axis_letter(direction: np.ndarray) -> str:
    """The patient-axis letter closest to a direction in DICOM patient space (LPS)."""
    axis = int(np.argmax(np.abs(direction)))
    return _AXIS_LETTERS[axis][int(direction[axis] > 0)]


def _reference(header: Dataset) -> Dataset:
    """A Source Image Sequence item pointing at one source instance."""
    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    return item
