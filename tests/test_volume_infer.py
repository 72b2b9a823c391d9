"""Volumes through `medclip-ad infer`: maps in the scan's own geometry, slice order, axes and bad inputs.

Geometry is compared with what SimpleITK and nibabel read from the inputs themselves. The lesion
round trip uses a probe detector whose map is the slice's own brightness, so the test sees exactly
where each slice's map lands; the real model's numbers are covered by test_parity.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.cli.main import main
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import CaseOptions, predict_scan, run_case
from medclip_ad.inference.predictor import Prediction
from medclip_ad.inference.volume import volume_score
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.orientation import slice_axis_for_plane
from medclip_ad.io.readers import read_case, read_study
from medclip_ad.io.synthetic import make_synthetic_study
from nibabel.testing import data_path as nibabel_data
from pydicom.data import get_testdata_file

from dicom_factory import simpleitk_ras_affine, write_series
from probe_detector import PreparedFromPredict

FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "224", "--device", "cpu"]
CT5N = Path(get_testdata_file("CT5N", download=False))
MM = 1e-4


class BrightnessProbe(PreparedFromPredict):
    """Stands in for the detector: each slice's map is its own display brightness in [0, 1]."""

    map_range = 1.0
    random_weights = False

    def __init__(self, batch_size: int = 3) -> None:
        self.config = type("Config", (), {"batch_size": batch_size})()
        self.batches: list[int] = []

    def predict(self, images: list[np.ndarray]) -> Prediction:
        self.batches.append(len(images))
        maps = [image.astype(np.float32) / 255.0 for image in images]
        return Prediction(np.array([m.mean() for m in maps], dtype=np.float32), maps)

    def provenance(self) -> dict:
        return {"method": "probe"}


def _infer(inputs: list[Path], out: Path, *extra: str) -> int:
    return main(["infer", *map(str, inputs), "--out", str(out), *FAST, *extra])


def test_dicom_series_map_has_the_series_shape_and_simpleitk_geometry(tmp_path):
    assert _infer([CT5N], tmp_path / "out") == 0
    written = nib.load(tmp_path / "out" / "CT5N" / "anomaly_map.nii.gz")
    affine, size, _ = simpleitk_ras_affine(CT5N)
    assert written.shape == size == (16, 16, 5) and written.get_data_dtype() == np.float32
    np.testing.assert_allclose(written.affine, affine, atol=MM)
    document = json.loads((tmp_path / "out" / "CT5N" / "scores.json").read_text())
    assert document["kind"] == "volume" and document["slice_axis"] == "axial" and len(document["slice_scores"]) == 5
    assert document["score"] == pytest.approx(max(document["slice_scores"]))
    assert document["intensity"] == "window soft_tissue"
    assert sorted(p.name for p in (tmp_path / "out" / "CT5N" / "overlays").iterdir()) == [
        f"slice_{index:04d}.png" for index in sorted(document["top_slices"])]


@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz"])
def test_nifti_map_reproduces_the_input_header(name, tmp_path):
    source = Path(nibabel_data) / name
    original = nib.load(source)
    assert _infer([source], tmp_path / "out") == 0
    case = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    written = nib.load(case / "anomaly_map.nii.gz")
    assert written.shape == original.shape[:3]
    np.testing.assert_allclose(written.affine, original.affine, atol=MM)


def test_lesion_slices_stay_where_they_were_from_dicom_to_map(tmp_path):
    study = make_synthetic_study(tmp_path / "study", shape=(64, 64, 12))
    source = next(s for s in discover_cases([study.dicom_dir])[0])
    scan = read_case(source)
    probe = BrightnessProbe(batch_size=5)
    document = run_case(probe, scan, tmp_path / "out", CaseOptions(window="brain"))
    assert probe.batches == [5, 5, 2]
    written = nib.load(tmp_path / "out" / source.name / "anomaly_map.nii.gz")
    np.testing.assert_allclose(written.affine, study.affine, atol=MM)
    map_volume = np.asarray(written.dataobj)
    # Every voxel's map value is its own brightness: slice order and in-plane orientation survived.
    expected = IntensityMapping.from_scan(scan, "brain")(study.volume_hu).astype(np.float32) / 255.0
    np.testing.assert_allclose(map_volume, expected, atol=1e-6)
    lesion = study.lesion_mask.astype(bool)
    assert map_volume[lesion].mean() > map_volume[~lesion & (study.volume_hu > 0)].mean() + 0.2
    assert document["intensity"] == "window brain"


def test_other_planes_keep_the_volume_shape(tmp_path):
    study = make_synthetic_study(tmp_path / "study", shape=(40, 48, 6))
    scan = read_case(discover_cases([study.nifti_path])[0][0])
    for plane, count in (("sagittal", 40), ("coronal", 48), ("axial", 6)):
        assert slice_axis_for_plane(plane, scan.affine) == {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
        document = run_case(BrightnessProbe(), scan, tmp_path / plane, CaseOptions(axis=plane))
        assert document["slice_axis"] == plane and len(document["slice_scores"]) == count
        assert nib.load(tmp_path / plane / scan.name / "anomaly_map.nii.gz").shape == (40, 48, 6)


def test_predict_scan_gives_what_run_case_writes(tmp_path):
    study = make_synthetic_study(tmp_path / "study", shape=(40, 48, 6))
    scan = read_study(study.dicom_dir)
    options = CaseOptions(window="brain", aggregation="topk_mean", top_k=2)
    prediction = predict_scan(BrightnessProbe(), scan, options)
    document = run_case(BrightnessProbe(), scan, tmp_path / "out", options)
    assert prediction.map.shape == scan.array.shape == (40, 48, 6) and prediction.axis == 2
    assert prediction.score == pytest.approx(document["score"]) and document["score_aggregation"] == "topk_mean(k=2)"
    assert prediction.score == pytest.approx(np.sort(prediction.slice_scores)[-2:].mean())
    np.testing.assert_allclose(prediction.slice_scores, document["slice_scores"], atol=1e-7)
    written = np.asarray(nib.load(tmp_path / "out" / scan.name / "anomaly_map.nii.gz").dataobj)
    np.testing.assert_array_equal(written, prediction.map)
    shutil.copytree(study.dicom_dir, tmp_path / "two" / "a")
    shutil.copy(study.nifti_path, tmp_path / "two" / "b.nii.gz")
    with pytest.raises(UserInputError, match="holds 2 studies"):
        read_study(tmp_path / "two")


def test_volume_score_aggregations():
    scores = np.array([0.1, 0.9, 0.5, 0.7])
    assert volume_score(scores) == pytest.approx(0.9)
    assert volume_score(scores, "topk_mean", top_k=2) == pytest.approx(0.8)
    assert volume_score(scores, "mean") == pytest.approx(0.55)


def test_folder_with_two_series_and_a_truncated_file(tmp_path):
    folder = tmp_path / "study"
    write_series(folder, 3, series_number=1, description="first", seed=1)
    write_series(folder, 3, series_number=2, description="second", seed=2)
    good = sorted(folder.iterdir())[0].read_bytes()
    (folder / "broken.dcm").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    assert _infer([folder], out) == 1
    cases = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(cases) == 2 and all((out / c / "anomaly_map.nii.gz").is_file() for c in cases)


def test_4d_nifti_needs_a_volume_index(tmp_path, capsys):
    data = np.random.default_rng(0).random((20, 22, 4, 3)).astype(np.float32)
    path = tmp_path / "dynamic.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    assert _infer([path], tmp_path / "out") == 2
    assert "4-D NIfTI with 3 volumes" in capsys.readouterr().err
    assert _infer([path], tmp_path / "out", "--volume-index", "1") == 0
    assert nib.load(tmp_path / "out" / "dynamic" / "anomaly_map.nii.gz").shape == (20, 22, 4)
    assert json.loads((tmp_path / "out" / "dynamic" / "scores.json").read_text())["volume_index"] == 1


def test_all_nan_volume_is_refused_and_constant_volume_runs(tmp_path, capsys):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.full((16, 16, 3), np.nan, np.float32), affine), tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.full((16, 16, 3), 7.0, np.float32), affine), tmp_path / "flat.nii.gz")
    assert _infer([tmp_path / "nan.nii.gz"], tmp_path / "out") == 2
    assert "NaN" in capsys.readouterr().err
    assert _infer([tmp_path / "flat.nii.gz"], tmp_path / "out") == 0
    flat_map = np.asarray(nib.load(tmp_path / "out" / "flat" / "anomaly_map.nii.gz").dataobj)
    assert np.isfinite(flat_map).all()


def test_dicom_out_writes_a_parametric_map_and_secondary_captures(tmp_path):
    import highdicom as hd
    import pydicom

    out = tmp_path / "out"
    assert _infer([CT5N], out, "--dicom-out", "both", "--overlays", "2") == 0
    parametric = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(out / "CT5N" / "anomaly_map.dcm"))
    written = np.asarray(nib.load(out / "CT5N" / "anomaly_map.nii.gz").dataobj)
    assert parametric.NumberOfFrames == 5
    mapping = parametric.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    real_world_max = float(parametric.pixel_array.max()) * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept
    assert real_world_max == pytest.approx(written.max(), abs=mapping.RealWorldValueSlope / 2 + 1e-9)  # uint16 steps
    captures = sorted((out / "CT5N" / "dicom_overlays").iterdir())
    assert len(captures) == 2 and pydicom.dcmread(captures[0]).PhotometricInterpretation == "RGB"


def test_dicom_out_refuses_nifti_before_running(tmp_path, capsys):
    source = Path(nibabel_data) / "standard.nii.gz"
    assert _infer([source], tmp_path / "out", "--dicom-out", "parametric-map") == 2
    assert "--dicom-out needs a DICOM input" in capsys.readouterr().err
