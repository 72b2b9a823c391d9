"""DICOM output: Parametric Map and Secondary Capture written from a read series, checked as read back."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from medclip_ad.errors import UserInputError
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.io.dicom_export import (
    OVERLAY_COMMENT,
    source_slice_overlays,
    write_parametric_map,
    write_secondary_capture,
)
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan
from medclip_ad.io.synthetic import make_synthetic_study
from pydicom.data import get_testdata_file

CT5N = Path(get_testdata_file("dicomdirtests/98892001/CT5N", download=False))
CR_WITHOUT_GEOMETRY = CT5N.parents[1] / "77654033" / "CR3" / "6278"  # 16 x 16, PatientOrientation L\F
ENHANCED_CT = Path(get_testdata_file("eCT_Supplemental.dcm", download=False))  # 2 frames, rows along -x
COLOUR_IMAGE = Path(get_testdata_file("SC_rgb.dcm", download=False))
# (columns, rows, slices): not square, so a transposed frame cannot pass.
SHAPE = (64, 48, 5)
MAP_RANGE = (0.0, 24.0)
STYLE = OverlayStyle(vmax=MAP_RANGE[1])
IDENTITY_FIELDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _read_only_case(location: Path) -> Scan:
    cases, problems = discover_cases([location])
    assert len(cases) == 1 and not problems
    return read_case(cases[0])


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_study(tmp_path_factory.mktemp("study"), shape=SHAPE).dicom_dir


@pytest.fixture()
def scan(series_dir: Path) -> Scan:
    return _read_only_case(series_dir)


def _known_map(shape: tuple[int, ...]) -> np.ndarray:
    """Slice k holds 4k plus a pattern that differs along columns and rows, all inside MAP_RANGE."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    return (4.0 * k + i / shape[0] + 2.0 * j / (shape[1] * 3.0)).astype(np.float32)


def _sources(scan: Scan) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.metadata["files"]]


def _frame_sources(ds: pydicom.Dataset) -> list[str]:
    """The source SOP Instance UID each frame of a parametric map references."""
    return [
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in ds.PerFrameFunctionalGroupsSequence
    ]


def _check_parametric_map(path: Path, scan: Scan, expected: np.ndarray, encoding: str = "uint16") -> pydicom.Dataset:
    """Every frame holds its source slice's map at that slice's position (to half an integer step for
    uint16); identity as the source's."""
    sources = _sources(scan)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert int(ds.NumberOfFrames) == len(sources) == expected.shape[2]
    assert (int(ds.Rows), int(ds.Columns)) == (int(sources[0].Rows), int(sources[0].Columns))
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    real_world = ds.pixel_array.astype(np.float64) * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept
    assert ds.pixel_array.dtype == np.dtype(encoding)
    tolerance = 1e-6 if encoding == "float32" else (MAP_RANGE[1] - MAP_RANGE[0]) / 65535 / 2 + 1e-9
    slice_of = {s.SOPInstanceUID: k for k, s in enumerate(sources)}
    references = _frame_sources(ds)
    assert sorted(references) == sorted(slice_of)
    positions = []
    for frame, uid in enumerate(references):
        k = slice_of[uid]
        np.testing.assert_allclose(real_world[frame], expected[:, :, k].T, rtol=0, atol=tolerance)
        position = ds.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
        positions.append([float(v) for v in position])
        np.testing.assert_allclose(positions[-1], [float(v) for v in sources[k].ImagePositionPatient])
    cosines = np.array(sources[0].ImageOrientationPatient, dtype=float)
    steps = np.diff(np.array(positions) @ np.cross(cosines[:3], cosines[3:]))
    assert np.all(steps > 0) or np.all(steps < 0), "frames are not ordered along the slice normal"
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    assert ds.SOPInstanceUID not in slice_of
    for keyword in IDENTITY_FIELDS:
        assert ds.get(keyword) == sources[0].get(keyword), keyword
    hd.pm.ParametricMap.from_dataset(ds)
    return ds


@pytest.mark.parametrize("encoding", ["uint16", "float32"])
def test_parametric_map_frames_are_the_map_on_the_source_slices(scan: Scan, tmp_path: Path, encoding: str) -> None:
    expected = _known_map(scan.array.shape)
    write_parametric_map(expected, scan, tmp_path / "map.dcm", map_range=MAP_RANGE, encoding=encoding)
    ds = _check_parametric_map(tmp_path / "map.dcm", scan, expected, encoding)
    assert "anomaly map" in ds.SeriesDescription and "not for diagnosis" in ds.SeriesDescription
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    if encoding == "float32":
        mapped = (mapping.DoubleFloatRealWorldValueFirstValueMapped, mapping.DoubleFloatRealWorldValueLastValueMapped)
        assert mapped == MAP_RANGE
    else:  # the whole 16-bit range spans the map's range, so stored 0 and 65535 are its ends
        assert (mapping.RealWorldValueFirstValueMapped, mapping.RealWorldValueLastValueMapped) == (0, 65535)
        assert int(ds.BitsAllocated) == 16 and int(ds.PixelRepresentation) == 0
        assert mapping.RealWorldValueIntercept == MAP_RANGE[0]
        assert mapping.RealWorldValueSlope * 65535 == pytest.approx(MAP_RANGE[1] - MAP_RANGE[0])
    assert [p.name for p in tmp_path.iterdir()] == ["map.dcm"]


def test_identifiers_come_from_the_source_files_only(scan: Scan, tmp_path: Path) -> None:
    scan.metadata["patient"] = {"PatientName": "WRONG^NAME", "PatientID": "WRONG"}
    scan.metadata["study_uid"] = "1.2.3.4"
    write_parametric_map(_known_map(scan.array.shape), scan, tmp_path / "map.dcm", map_range=MAP_RANGE)
    [written] = write_secondary_capture(
        source_slice_overlays(scan, _known_map(scan.array.shape), [2], IntensityMapping.from_scan(scan), STYLE),
        scan,
        tmp_path / "sc",
    )
    source = _sources(scan)[0]
    for path in (tmp_path / "map.dcm", written):
        ds = pydicom.dcmread(path)
        assert (ds.PatientName, ds.PatientID, ds.StudyInstanceUID) == (
            source.PatientName,
            source.PatientID,
            source.StudyInstanceUID,
        )


def test_source_quirks_highdicom_refuses_become_empty_or_shared(tmp_path: Path) -> None:
    """Missing patient/study attributes and a non-standard PatientSex become empty values, and an
    orientation jittering within the reader's tolerance is taken as the first slice's."""
    dicom_dir = make_synthetic_study(tmp_path / "study", shape=(16, 12, 3)).dicom_dir
    for index, path in enumerate(sorted(dicom_dir.iterdir())):
        ds = pydicom.dcmread(path)
        del ds.AccessionNumber, ds.StudyID
        ds.PatientSex = "U"
        if index == 1:
            ds.ImageOrientationPatient = ["1", "0.0001", "0", "0", "1", "0"]
        ds.save_as(path)
    scan = _read_only_case(dicom_dir)
    anomaly_map = np.zeros(scan.array.shape, np.float32)
    write_parametric_map(anomaly_map, scan, tmp_path / "map.dcm", map_range=MAP_RANGE)
    overlays = source_slice_overlays(scan, anomaly_map, [1], IntensityMapping.from_scan(scan), STYLE)
    [capture] = write_secondary_capture(overlays, scan, tmp_path / "sc")
    for ds in (pydicom.dcmread(tmp_path / "map.dcm"), pydicom.dcmread(capture)):
        assert (ds.AccessionNumber, ds.PatientSex, ds.StudyID) == ("", "", "")
        assert ds.PatientName == "ANONYMOUS^DEMO"


def test_secondary_capture_overlays(scan: Scan, tmp_path: Path) -> None:
    anomaly_map = _known_map(scan.array.shape)
    overlays = source_slice_overlays(scan, anomaly_map, [3, 0], IntensityMapping.from_scan(scan), STYLE)
    paths = write_secondary_capture(overlays, scan, tmp_path / "sc")
    assert [p.name for p in paths] == ["sc_0003.dcm", "sc_0000.dcm"]
    assert sorted(p.name for p in (tmp_path / "sc").iterdir()) == ["sc_0000.dcm", "sc_0003.dcm"]
    sources = _sources(scan)
    written = [pydicom.dcmread(p) for p in paths]
    for ds, (index, rgb) in zip(written, overlays):
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert ds.PhotometricInterpretation == "RGB" and ds.pixel_array.shape == (SHAPE[1], SHAPE[0], 3)
        np.testing.assert_array_equal(ds.pixel_array, rgb)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == sources[index].SOPInstanceUID
        assert ds.ImageType[0] == "DERIVED" and ds.ImageComments == OVERLAY_COMMENT
        assert "not for diagnosis" in ds.SeriesDescription
        assert list(ds.PatientOrientation) == ["L", "P"]
        for keyword in IDENTITY_FIELDS:
            assert ds.get(keyword) == sources[index].get(keyword), keyword
        assert ds.StudyInstanceUID == sources[index].StudyInstanceUID
    assert written[0].SeriesInstanceUID == written[1].SeriesInstanceUID != sources[0].SeriesInstanceUID
    # instance numbers are the source slices', so PACS sorts captures as the scan, not by score
    assert [int(ds.InstanceNumber) for ds in written] == [int(sources[k].InstanceNumber) for k in (3, 0)]


def test_overlay_of_a_source_slice_is_that_slice(scan: Scan) -> None:
    anomaly_map = np.zeros(scan.array.shape, np.float32)
    mapping = IntensityMapping.from_scan(scan)
    [(index, rgb)] = source_slice_overlays(scan, anomaly_map, [4], mapping, OverlayStyle(vmax=1.0, threshold=0.5))
    assert index == 4
    np.testing.assert_array_equal(rgb[:, :, 0], mapping(scan.array[:, :, 4].T))


def test_a_scan_not_read_from_dicom_is_refused(tmp_path: Path) -> None:
    study = make_synthetic_study(tmp_path / "study", shape=(16, 12, 3))
    scan = _read_only_case(study.nifti_path)
    out = tmp_path / "out"
    with pytest.raises(UserInputError, match="--dicom-out needs a DICOM input, this case is nifti") as error:
        write_parametric_map(np.zeros(scan.array.shape, np.float32), scan, out / "map.dcm", map_range=MAP_RANGE)
    assert "\n" not in str(error.value)
    with pytest.raises(UserInputError, match="--dicom-out needs"):
        write_secondary_capture([(0, np.zeros((12, 16, 3), np.uint8))], scan, out / "sc")
    assert not out.exists()


def test_a_colour_dicom_image_is_refused(tmp_path: Path) -> None:
    scan = _read_only_case(COLOUR_IMAGE)
    with pytest.raises(UserInputError, match="needs a grey-level DICOM input"):
        write_parametric_map(np.zeros(scan.array.shape[:2], np.float32), scan, tmp_path / "m.dcm", map_range=MAP_RANGE)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("source", "refusal", "orientation"),
    [
        (CR_WITHOUT_GEOMETRY, "needs the source's patient geometry", ["L", "F"]),
        (ENHANCED_CT, "needs one DICOM file per slice", ["R", "P"]),  # rows run to the right
    ],
)
def test_without_a_parametric_map_a_secondary_capture_still_works(
    source: Path, refusal: str, orientation: list[str], tmp_path: Path
) -> None:
    """A radiograph without patient geometry, or a multi-frame file: no parametric map, one clear line;
    the secondary capture takes its orientation from PatientOrientation or the shared functional groups."""
    scan = _read_only_case(source)
    anomaly_map = np.zeros(scan.array.shape, np.float32)
    with pytest.raises(UserInputError, match=refusal):
        write_parametric_map(anomaly_map, scan, tmp_path / "map.dcm", map_range=MAP_RANGE)
    overlays = source_slice_overlays(scan, anomaly_map, [0], IntensityMapping.from_scan(scan), STYLE)
    [path] = write_secondary_capture(overlays, scan, tmp_path / "sc")
    ds = pydicom.dcmread(path)
    source_header = pydicom.dcmread(source, stop_before_pixels=True)
    assert list(ds.PatientOrientation) == orientation
    assert (ds.PatientID, ds.StudyInstanceUID) == (source_header.PatientID, source_header.StudyInstanceUID)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source_header.SOPInstanceUID
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m[:, :, :-1], "map shape"),
        (lambda m: m + MAP_RANGE[1] + 1.0, "outside"),
    ],
)
def test_a_map_that_does_not_fit_is_refused(scan: Scan, tmp_path: Path, change, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_parametric_map(change(_known_map(scan.array.shape)), scan, tmp_path / "map.dcm", map_range=MAP_RANGE)
    assert not any(tmp_path.iterdir())


def test_an_overlay_not_on_the_source_grid_is_refused(scan: Scan, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected"):
        write_secondary_capture([(0, np.zeros((SHAPE[0], SHAPE[1], 3), np.uint8))], scan, tmp_path)
    with pytest.raises(ValueError, match="outside"):
        write_secondary_capture([(SHAPE[2], np.zeros((SHAPE[1], SHAPE[0], 3), np.uint8))], scan, tmp_path)
    assert not any(tmp_path.iterdir())


def test_pydicom_ct_series(tmp_path: Path) -> None:
    scan = _read_only_case(CT5N)
    expected = _known_map(scan.array.shape)
    write_parametric_map(expected, scan, tmp_path / "map.dcm", map_range=MAP_RANGE)
    ds = _check_parametric_map(tmp_path / "map.dcm", scan, expected)
    assert str(ds.PatientName) == "Doe^Peter"
    overlays = source_slice_overlays(scan, expected, [0], IntensityMapping.from_scan(scan), STYLE)
    [path] = write_secondary_capture(overlays, scan, tmp_path / "sc")
    capture = pydicom.dcmread(path)
    assert capture.PatientID == ds.PatientID and capture.pixel_array.shape == (16, 16, 3)
