"""DICOM findings a PACS can display: the integer Parametric Map, the lesion Segmentation and the TID 1500
report, written from a real pydicom CT series, parsed back with highdicom and validated with dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from medclip_ad.errors import UserInputError
from medclip_ad.inference.calibration import Calibration, fit_operating_point
from medclip_ad.inference.lesions import lesion_mask, volume_components
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.io.dicom_export import (
    DerivedSeries,
    source_slice_overlays,
    write_parametric_map,
    write_secondary_capture,
)
from medclip_ad.io.dicom_seg import write_segmentation
from medclip_ad.io.dicom_sr import write_structured_report
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan

from dicom_factory import template_stored_volume, write_series

MAP_RANGE = (0.0, 24.0)
N_SLICES = 6
MODEL = {"method": "ensemble", "backbone": "ViT-tiny", "clip_weights": "random:tiny", "prompts": None,
         "prompts_sha256": None, "layers": [24], "image_size": 224, "random_weights": True, "precision": "fp32"}


def _series(folder: Path, **changes) -> Scan:
    """pydicom's CT_small as a 6-slice series, with a body part (and any other attribute changes)."""
    paths = write_series(folder, N_SLICES, stored=template_stored_volume(N_SLICES))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.BodyPartExamined = "HEAD"
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    cases, problems = discover_cases([folder])
    assert len(cases) == 1 and not problems
    return read_case(cases[0])


def _two_lesion_map(shape: tuple[int, ...]) -> np.ndarray:
    anomaly_map = np.full(shape, 0.5, np.float32)
    anomaly_map[20:40, 30:50, 1:4] = 6.0
    anomaly_map[90:100, 80:96, 4] = 9.0
    return anomaly_map


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Scan, Path, dict]:
    root = tmp_path_factory.mktemp("findings")
    scan = _series(root / "series")
    anomaly_map = _two_lesion_map(scan.array.shape)
    mask = lesion_mask(anomaly_map, 3.0)
    normals = np.linspace(1.0, 5.0, 39)
    calibration = Calibration(model=MODEL, scoring={"kind": "volume"}, normal_scores=list(normals), normals=[],
                              operating_points=[fit_operating_point(normals, 0.05)], pixel_percentile=99.9,
                              pixel_threshold=3.0)
    document = {"case": scan.name, "score": 7.5, "model": MODEL,
                **calibration.decision(7.5, calibration.operating_points[0]),
                "components": [c.to_json() for c in volume_components(anomaly_map, mask, scan.affine, 2)]}
    out = root / "out"
    series = DerivedSeries()
    write_parametric_map(anomaly_map, scan, out / "map.dcm", map_range=MAP_RANGE, series=series)
    overlays = source_slice_overlays(scan, anomaly_map, [4, 1], IntensityMapping.from_scan(scan),
                                     OverlayStyle(vmax=MAP_RANGE[1]))
    write_secondary_capture(overlays, scan, out / "sc", series=series)
    segmentation = write_segmentation(mask, scan, out / "seg.dcm", model=MODEL, operating_point="5%", series=series)
    write_structured_report(scan, document, out / "sr.dcm", series=series, segmentation=segmentation)
    return scan, out, {"mask": mask, "document": document}


def _errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) is installed by .ci/run")
def test_every_output_passes_dciodvfy_with_no_errors_beyond_the_source(written) -> None:
    scan, out, _ = written
    source_errors = _errors(Path(scan.metadata["files"][0]))
    for path in [out / "map.dcm", out / "seg.dcm", out / "sr.dcm", *sorted((out / "sc").iterdir())]:
        assert _errors(path) <= source_errors, path.name


@pytest.mark.skipif(shutil.which("dcm2pnm") is None, reason="dcmtk (dcm2pnm) is installed by .ci/run")
def test_dcmtk_renders_the_integer_parametric_map_and_not_the_float_one(written, tmp_path) -> None:
    scan, out, _ = written
    rendered = subprocess.run(["dcm2pnm", "+on", str(out / "map.dcm"), str(tmp_path / "map.png")],
                              capture_output=True, text=True, check=False)
    assert rendered.returncode == 0 and (tmp_path / "map.png").stat().st_size > 0, rendered.stderr
    write_parametric_map(_two_lesion_map(scan.array.shape), scan, tmp_path / "float.dcm", map_range=MAP_RANGE,
                         encoding="float32")
    refused = subprocess.run(["dcm2pnm", "+on", str(tmp_path / "float.dcm"), str(tmp_path / "float.png")],
                             capture_output=True, text=True, check=False)
    assert refused.returncode != 0  # why uint16 is the default: DCMTK has no float rendering


def test_integer_parametric_map_and_context(written) -> None:
    scan, out, _ = written
    ds = pydicom.dcmread(out / "map.dcm")
    source = pydicom.dcmread(scan.metadata["files"][0], stop_before_pixels=True)
    assert ds.pixel_array.dtype == np.uint16 and "FloatPixelData" not in ds
    assert (ds.BodyPartExamined, ds.StudyDescription, ds.Modality) == ("HEAD", source.StudyDescription, "OT")
    for sc_path in (out / "sc").iterdir():
        capture = pydicom.dcmread(sc_path)
        assert (capture.BodyPartExamined, capture.StudyDescription) == ("HEAD", source.StudyDescription)


def test_segmentation_is_the_lesion_mask_on_the_source_slices(written) -> None:
    scan, out, truth = written
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(out / "seg.dcm"))
    source = pydicom.dcmread(scan.metadata["files"][0], stop_before_pixels=True)
    assert seg.number_of_segments == 1 and seg.StudyInstanceUID == source.StudyInstanceUID
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.metadata["files"]]
    uids = [s.SOPInstanceUID for s in sources]
    volume = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(volume[..., 0].transpose(2, 1, 0) > 0, truth["mask"])
    assert seg.BodyPartExamined == "HEAD"


def _numeric(items, code: str) -> list[float]:
    """Every numeric value under a concept code, anywhere in an SR content tree."""
    values = []
    for item in items:
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == code:
            values.append(float(item.MeasuredValueSequence[0].NumericValue))
        values += _numeric(item.get("ContentSequence", []), code)
    return values


def _codes(items, code: str) -> list[str]:
    found = []
    for item in items:
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == code:
            found.append(item.ConceptCodeSequence[0].CodeMeaning)
        found += _codes(item.get("ContentSequence", []), code)
    return found


def _texts(items) -> list[str]:
    found = []
    for item in items:
        if item.ValueType == "TEXT":
            found.append(str(item.TextValue))
        found += _texts(item.get("ContentSequence", []))
    return found


def test_structured_report_carries_verdict_measurements_and_references(written) -> None:
    scan, out, truth = written
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(out / "sr.dcm"))
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    components = truth["document"]["components"]
    assert [c["voxels"] for c in components] == [1200, 160]
    assert _numeric(sr.ContentSequence, "118565006") == pytest.approx([c["volume_ml"] for c in components])
    assert _numeric(sr.ContentSequence, "81827009") == pytest.approx([c["largest_diameter_mm"] for c in components])
    assert _numeric(sr.ContentSequence, "ANOMALY_SCORE") == [7.5]
    assert _numeric(sr.ContentSequence, "OP_POINT_FPR") == pytest.approx([5.0])
    assert _codes(sr.ContentSequence, "ANOMALY_VERDICT") == ["Abnormal"]
    files = [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.metadata["files"]]
    referenced = {ref.ReferencedSOPInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                  for series in item.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert {f.SOPInstanceUID for f in files} <= referenced
    assert sr.StudyDescription == files[0].StudyDescription and "BodyPartExamined" not in sr
    assert "random_weights=True" in _texts(sr.ContentSequence)  # provenance in the algorithm identification


def test_each_run_gets_its_own_series_numbers_descriptions_and_times() -> None:
    first, second = DerivedSeries(datetime(2026, 3, 1, 9, 15, 2)), DerivedSeries(datetime(2026, 3, 1, 9, 47, 30))
    kinds = ("parametric-map", "secondary-capture", "segmentation", "report")
    numbers = {run.number(kind) for run in (first, second) for kind in kinds}
    assert len(numbers) == 8 and first.number("parametric-map") == 915021
    assert first.description("report") != second.description("report")
    assert all(len(run.description(kind)) <= 64 for run in (first, second) for kind in kinds)


def test_capture_instance_numbers_follow_the_source_slices(written) -> None:
    scan, out, _ = written
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.metadata["files"]]
    for path in sorted((out / "sc").iterdir()):
        capture = pydicom.dcmread(path)
        index = int(path.stem.split("_")[1])
        assert int(capture.InstanceNumber) == int(sources[index].InstanceNumber)
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == sources[index].SOPInstanceUID


def test_a_zero_pixel_spacing_is_never_copied(tmp_path: Path) -> None:
    scan = _series(tmp_path / "series", PixelSpacing=[0, 0])
    anomaly_map = _two_lesion_map(scan.array.shape)
    with pytest.raises(UserInputError, match="PixelSpacing is zero"):
        write_parametric_map(anomaly_map, scan, tmp_path / "map.dcm", map_range=MAP_RANGE)
    overlays = source_slice_overlays(scan, anomaly_map, [0], IntensityMapping.from_scan(scan), OverlayStyle(vmax=24))
    [path] = write_secondary_capture(overlays, scan, tmp_path / "sc")
    assert "PixelSpacing" not in pydicom.dcmread(path)
    assert not (tmp_path / "map.dcm").exists()
