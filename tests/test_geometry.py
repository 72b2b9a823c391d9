"""Geometry and intensity as the source had them: NIfTI transforms, CT detection, series grouping.

- A map keeps its NIfTI input's sform and qform (which may differ), each with its code, and its units.
- A CT stored as NIfTI (no modality tag) is recognised by its Hounsfield values and windowed; scores.json
  records which rule chose the mapping, and `--modality` decides explicitly.
- A series mixing patients is refused in one line naming both; slices whose orientations jitter across
  a rounding boundary still stack into one series (one tolerance for grouping and reading).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from medclip_ad.cli.main import main
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import CaseOptions, run_case
from medclip_ad.inference.predictor import Prediction
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.readers import read_case, read_study
from medclip_ad.io.scan import Scan
from medclip_ad.io.synthetic import make_synthetic_study

from dicom_factory import write_series
from probe_detector import PreparedFromPredict

FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "112", "--device", "cpu"]


class MeanProbe(PreparedFromPredict):
    """Stands in for the detector where only the outputs' geometry and provenance matter."""

    map_range = 1.0
    random_weights = False
    config = type("Config", (), {"batch_size": 8})()

    def predict(self, images: list[np.ndarray]) -> Prediction:
        maps = [image.astype(np.float32) / 255.0 for image in images]
        return Prediction(np.array([m.mean() for m in maps], dtype=np.float32), maps)

    def provenance(self) -> dict:
        return {"method": "probe"}


def _nifti_with_two_transforms(path: Path, sform_code: int, qform_code: int) -> nib.Nifti1Image:
    """A volume whose qform is rotated 30 degrees and shifted 45 mm away from its sform, in mm and seconds."""
    data = np.random.default_rng(0).normal(100, 20, (12, 10, 6)).astype(np.float32)
    sform = np.diag([1.2, 1.5, 3.0, 1.0])
    sform[:3, 3] = [-7.0, 9.0, -12.0]
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    qform = np.eye(4)
    qform[:3, :3] = rotation @ np.diag([1.2, 1.5, 3.0])
    qform[:3, 3] = [38.0, 9.0, -12.0]
    image = nib.Nifti1Image(data, sform)
    image.set_sform(sform, code=sform_code)
    image.set_qform(qform, code=qform_code)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)
    return nib.load(path)


@pytest.mark.parametrize("sform_code, qform_code", [(2, 1), (1, 0), (0, 1), (4, 3)])
def test_map_keeps_both_nifti_transforms_their_codes_and_units(sform_code, qform_code, tmp_path):
    original = _nifti_with_two_transforms(tmp_path / "scan.nii.gz", sform_code, qform_code)
    scan = read_study(tmp_path / "scan.nii.gz")
    run_case(MeanProbe(), scan, tmp_path / "out", CaseOptions())
    written = nib.load(tmp_path / "out" / "scan" / "anomaly_map.nii.gz")
    for name in ("get_sform", "get_qform"):
        theirs, their_code = getattr(original.header, name)(coded=True)
        ours, our_code = getattr(written.header, name)(coded=True)
        assert our_code == their_code, name
        if theirs is not None:
            np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert written.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)


@pytest.fixture(scope="module")
def ct_nifti(tmp_path_factory) -> Path:
    return make_synthetic_study(tmp_path_factory.mktemp("ct") / "study", shape=(32, 32, 6),
                                spacing=(6.0, 6.0, 20.0)).nifti_path


def test_hounsfield_nifti_is_windowed_and_the_rule_is_recorded(ct_nifti, tmp_path):
    scan = read_study(ct_nifti)
    assert scan.modality is None
    mapping = IntensityMapping.from_scan(scan)
    assert mapping.description == "window soft_tissue" and mapping.rule.startswith("Hounsfield units detected")
    document = run_case(MeanProbe(), scan, tmp_path / "out", CaseOptions())
    stored = json.loads((tmp_path / "out" / scan.name / "scores.json").read_text())
    assert stored["intensity"] == document["intensity"] == "window soft_tissue"
    assert stored["intensity_rule"] == mapping.rule


def test_modality_option_decides_against_detection(ct_nifti, tmp_path):
    assert main(["infer", str(ct_nifti), "--out", str(tmp_path / "out"), *FAST, "--modality", "MR"]) == 0
    document = json.loads(next((tmp_path / "out").glob("*/scores.json")).read_text())
    assert document["intensity"].startswith("percentiles") and document["intensity_rule"] == "--modality MR"


@pytest.mark.parametrize("values, is_ct", [
    ("mr", False),             # MR signal: never negative
    ("z_scored", False),       # normalised intensities: negative, but nowhere near -500
    ("no_air", False),         # reaches below -500 without an air peak at -1000
    ("ct_padded", True),       # CT whose corners are padded with -3024 outside the field of view
])
def test_hounsfield_detection_rule(values, is_ct):
    rng = np.random.default_rng(1)
    shape = (40, 40, 4)
    arrays = {
        "mr": rng.gamma(2.0, 150.0, shape),
        "z_scored": rng.normal(0.0, 1.0, shape),
        "no_air": rng.uniform(-700.0, 700.0, shape),
        "ct_padded": np.where(rng.random(shape) < 0.3, -3024.0, np.where(
            rng.random(shape) < 0.3, rng.normal(-1000, 20, shape), rng.normal(40, 30, shape))),
    }
    scan = Scan("s", Path("s.nii.gz"), "volume", arrays[values].astype(np.float32), np.eye(4))
    mapping = IntensityMapping.from_scan(scan)
    assert mapping.description.startswith("window") == is_ct, mapping.rule
    forced = IntensityMapping.from_scan(scan, modality="CT" if not is_ct else "other")
    assert forced.description.startswith("window") != is_ct and forced.rule.startswith("--modality")


def test_series_mixing_patients_is_refused_naming_both(tmp_path):
    paths = write_series(tmp_path / "series", 4)
    misfiled = pydicom.dcmread(paths[2])
    misfiled.PatientID = "OTHER-PATIENT-7"
    misfiled.save_as(paths[2])
    sources, problems = discover_cases([tmp_path / "series"])
    assert len(sources) == 1 and not problems
    with pytest.raises(UserInputError) as error:
        read_case(sources[0])
    message = str(error.value)
    assert "'1CT1'" in message and "'OTHER-PATIENT-7'" in message and "\n" not in message


def _set_orientation(path: Path, cosines: tuple[float, ...]) -> None:
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in cosines]
    ds.save_as(path)


def test_orientation_jitter_across_a_rounding_boundary_keeps_one_series(tmp_path):
    paths = write_series(tmp_path / "series", 6)
    for index, path in enumerate(paths):  # 0.00049 rounds to 0.000 and 0.00051 to 0.001 at 3 decimals
        shear = 0.00049 if index % 2 else 0.00051
        _set_orientation(path, (1.0, shear, 0.0, -shear, 1.0, 0.0))
    sources, problems = discover_cases([tmp_path / "series"])
    assert len(sources) == 1 and len(sources[0].paths) == 6 and not problems
    assert read_case(sources[0]).array.shape[2] == 6


def test_orientations_beyond_the_tolerance_are_two_stacks(tmp_path):
    paths = write_series(tmp_path / "series", 6)
    for path in paths[3:]:
        _set_orientation(path, (1.0, 0.003, 0.0, -0.003, 1.0, 0.0))
    sources, _ = discover_cases([tmp_path / "series"])
    assert sorted(len(source.paths) for source in sources) == [3, 3]
