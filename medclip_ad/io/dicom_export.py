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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medclip_ad import __version__
from medclip_ad.config import PARAMETRIC_MAP_ENCODINGS
from medclip_ad.errors import UserInputError
from medclip_ad.inference.overlay import OverlayStyle, overlay
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.scan import Scan
from medclip_ad.io.writers import atomic_write

# Levels of the 16-bit Parametric Map encoding (PARAMETRIC_MAP_ENCODINGS in config).
UINT16_LEVELS: int = 65535

MANUFACTURER: str = "medclip-ad"
MODEL_NAME: str = "AnomalyCLIP zero-shot anomaly detection"
# Software has no serial number, but the Enhanced General Equipment module requires one.
DEVICE_SERIAL_NUMBER: str = "0"
RESEARCH_NOTICE: str = "research output, not for diagnosis"
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
ARTIFICIAL_INTELLIGENCE = codes.cid7162.ArtificialIntelligence
MAP_LUT_LABEL: str = "ANOMALY"
MAP_LUT_EXPLANATION: str = "anomaly score: sum of per-layer anomaly probabilities"
# Map values may pass the ends of `map_range` by this fraction of its width (float rounding in resizing,
# blurring and autocast) before the range is taken to be the wrong one.
MAP_RANGE_TOLERANCE: float = 1e-4

# Attributes of the examined anatomy and study each kind of derived object keeps from its source, as its
# IOD has them: an SR's series has no anatomy, and a segmentation states Laterality only when known.
_ANATOMY: tuple[str, ...] = ("StudyDescription", "BodyPartExamined", "Laterality")
_CONTEXT_ATTRIBUTES: dict[str, tuple[str, ...]] = {"parametric-map": _ANATOMY, "secondary-capture": _ANATOMY,
                                                   "segmentation": _ANATOMY, "report": ("StudyDescription",)}
_IMAGE_KINDS: frozenset[str] = frozenset({"parametric-map", "secondary-capture"})
# Per kind of derived series: the last digit of its series number, and its name in the description.
_SERIES_KINDS: dict[str, tuple[int, str]] = {"parametric-map": (1, "anomaly map"),
                                             "secondary-capture": (2, "anomaly overlay"),
                                             "segmentation": (3, "lesion mask"), "report": (4, "findings")}
# Longest SeriesDescription (VR LO).
_DESCRIPTION_LENGTH: int = 64

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


@dataclass(frozen=True)
class DerivedSeries:
    """Series number, description, date and time that one run gives each kind of DICOM output.

    Two runs on one study must give series a radiologist can tell apart: the number is the run's start
    time (HHMMSS) followed by one digit per kind, the description carries the date and time, and
    SeriesDate/SeriesTime are the run's start.
    """

    started: datetime = field(default_factory=datetime.now)

    def number(self, kind: str) -> int:
        return int(self.started.strftime("%H%M%S")) * 10 + _SERIES_KINDS[kind][0]

    def description(self, kind: str) -> str:
        text = f"medclip-ad {_SERIES_KINDS[kind][1]} {self.started:%Y%m%d-%H%M%S} (not for diagnosis)"
        return text[:_DESCRIPTION_LENGTH]

    def new_instance(self, kind: str) -> dict:
        """The arguments every derived multi-frame object (highdicom) of this run takes alike: new UIDs,
        the run's series number and description, the software as equipment, the research notice."""
        return {"series_instance_uid": hd.UID(), "series_number": self.number(kind), "sop_instance_uid": hd.UID(),
                "instance_number": 1, "manufacturer": MANUFACTURER, "manufacturer_model_name": MODEL_NAME,
                "software_versions": __version__, "device_serial_number": DEVICE_SERIAL_NUMBER,
                "content_description": RESEARCH_NOTICE, "series_description": self.description(kind)}

    def stamp(self, dataset: Dataset, source: Dataset, kind: str) -> None:
        """Set the run's series attributes and copy the source's anatomy and study context."""
        dataset.SeriesNumber = self.number(kind)
        dataset.SeriesDescription = self.description(kind)
        dataset.SeriesDate = self.started.strftime("%Y%m%d")
        dataset.SeriesTime = self.started.strftime("%H%M%S.%f")
        for keyword in _CONTEXT_ATTRIBUTES[kind]:
            value = source.get(keyword)
            if value not in (None, ""):
                setattr(dataset, keyword, value)
        if kind in _IMAGE_KINDS and "Laterality" not in dataset:  # Type 2C in images: empty when not stated
            dataset.Laterality = None


def write_parametric_map(
    map_volume: np.ndarray,
    scan: Scan,
    path: Path,
    *,
    map_range: tuple[float, float],
    encoding: str = "uint16",
    series: DerivedSeries | None = None,
) -> None:
    """Save the map of a DICOM series as a Parametric Map that PACS can fuse with the source.

    `encoding` "uint16" stores 16-bit integers spanning `map_range` with a Real World Value Mapping back
    to the map's values (steps of range / 65535), which PACS viewers render; "float32" stores the values
    exactly.

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
    sources = source_headers(files)
    check_placeable(sources[0], scan, "a parametric map")
    if encoding not in PARAMETRIC_MAP_ENCODINGS:
        raise ValueError(f"unknown parametric map encoding {encoding!r} (choose from {PARAMETRIC_MAP_ENCODINGS})")
    series = series or DerivedSeries()
    try:
        parametric_map = _parametric_map(sources, data, (low, high), encoding, series)
    except ValueError as exc:  # what highdicom refuses in a source series the reader accepted
        raise UserInputError(f"{scan.source}: cannot write a DICOM parametric map ({exc})") from exc
    series.stamp(parametric_map, sources[0], "parametric-map")
    with atomic_write(path) as temporary:
        parametric_map.save_as(temporary)


def check_placeable(source: Dataset, scan: Scan, what: str) -> None:
    """Refuse a source a derived object cannot be placed on: no frame of reference, or a pixel spacing of 0."""
    if "FrameOfReferenceUID" not in source:
        raise UserInputError(
            f"{scan.source}: {what} needs the source's patient geometry (FrameOfReferenceUID), "
            "which it lacks; use --dicom-out secondary-capture"
        )
    if _image_attribute(source, "PixelSpacing", "PixelMeasuresSequence") is not None and not _pixel_spacing(source):
        raise UserInputError(f"{scan.source}: PixelSpacing is zero or invalid, so {what} cannot be placed on it; "
                             "use --dicom-out secondary-capture")


def _parametric_map(
    sources: list[Dataset],
    data: np.ndarray,
    map_range: tuple[float, float],
    encoding: str,
    series: DerivedSeries,
) -> hd.pm.ParametricMap:
    """The Parametric Map object: one frame per source slice, windowed to the map's full range."""
    low, high = map_range
    frames = np.ascontiguousarray(data.transpose(2, 1, 0))
    if encoding == "uint16":
        step = (high - low) / UINT16_LEVELS
        frames = _quantised(frames, low, step)
        stored_range, slope, intercept = (0, UINT16_LEVELS), step, low
        window = hd.VOILUTTransformation(window_center=UINT16_LEVELS / 2, window_width=UINT16_LEVELS + 1)
    else:
        stored_range, slope, intercept = (low, high), 1.0, 0.0
        window = hd.VOILUTTransformation(window_center=(low + high) / 2, window_width=high - low)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=MAP_LUT_LABEL,
        lut_explanation=MAP_LUT_EXPLANATION,
        unit=SCORE_UNIT,
        value_range=stored_range,
        slope=slope,
        intercept=intercept,
        quantity_definition=ANOMALY_SCORE,
    )
    return hd.pm.ParametricMap(
        source_images=sources,
        pixel_array=frames,
        **series.new_instance("parametric-map"),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[window],
        content_label=MAP_LUT_LABEL,
        coding_schemes=[CodingSchemeIdentificationItem(PRIVATE_CODING_SCHEME, name=f"{MANUFACTURER} codes")],
    )


def _quantised(frames: np.ndarray, low: float, step: float) -> np.ndarray:
    """Frames as the nearest of 65536 levels from `low` by `step`; rounded in float64 (float32 cannot place a
    value to half a step at the top of the range), a frame at a time so memory stays near the uint16 output."""
    stored = np.empty(frames.shape, dtype=np.uint16)
    for index, frame in enumerate(frames):
        stored[index] = np.clip(np.rint((frame.astype(np.float64) - low) / step), 0, UINT16_LEVELS)
    return stored


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
    series: DerivedSeries | None = None,
) -> list[Path]:
    """Save (source slice index, RGB uint8 (rows, columns, 3)) overlays as one Secondary Capture each.

    For PACS without parametric-map support: one new series in the source's study, patient and study
    copied from each overlay's source file, which is referenced; files are `folder/sc_<slice>.dcm`.
    Each capture's instance number is its source slice's, so PACS sorts them as the scan, not by score.
    """
    files = dicom_source_files(scan)
    expected = (scan.array.shape[1], scan.array.shape[0], 3)
    series_uid = hd.UID()
    series = series or DerivedSeries()
    written: list[Path] = []
    for index, rgb in overlays:
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
            series_number=series.number("secondary-capture"),
            sop_instance_uid=hd.UID(),
            instance_number=_source_instance_number(source, index),
            manufacturer=MANUFACTURER,
            pixel_spacing=_pixel_spacing(source),
            patient_orientation=_patient_orientation(source, source_file),
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
            series_description=series.description("secondary-capture"),
            manufacturer_model_name=MODEL_NAME,
            software_versions=__version__,
        )
        series.stamp(image, source, "secondary-capture")
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


def source_headers(files: Sequence[Path]) -> list[Dataset]:
    """The source series' headers, in slice order, as highdicom accepts them for a multi-frame derived object."""
    return _shared_orientation([_study_complete(_source_header(f)) for f in files])


def algorithm_identification(model: dict) -> hd.AlgorithmIdentificationSequence:
    """The detector as DICOM names an algorithm: method, package version and the provenance that fixes its
    output (weights, prompts' hash, layers, image size)."""
    parameters = {key: str(model.get(key)) for key in ("clip_weights", "prompts_sha256", "layers", "image_size",
                                                       "random_weights") if model.get(key) is not None}
    return hd.AlgorithmIdentificationSequence(name=f"{MANUFACTURER} {model.get('method')}",
                                              family=ARTIFICIAL_INTELLIGENCE, version=__version__,
                                              source=MANUFACTURER, parameters=parameters)


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
    """The source's in-plane pixel spacing (row, column) in mm, when it has a usable one: a spacing of
    0 (some scanners write it) would make every measurement in a PACS zero, so it is not copied."""
    spacing = _image_attribute(header, "PixelSpacing", "PixelMeasuresSequence")
    if spacing is None or len(spacing) != 2:
        return None
    values = (float(spacing[0]), float(spacing[1]))
    return values if all(np.isfinite(v) and v > 0 for v in values) else None


def _source_instance_number(header: Dataset, index: int) -> int:
    """The source slice's InstanceNumber, else its position in the series (from 1)."""
    number = header.get("InstanceNumber")
    return int(number) if number not in (None, "") else index + 1


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
