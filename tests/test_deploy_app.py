"""The MONAI Deploy application (medclip_ad/deploy): a study folder in, PACS-ready DICOM out, on the CPU.

The app runs as a user runs it (`python -m medclip_ad.deploy -i -o -m`, Holoscan's runtime, which needs
no GPU) on pydicom's 5-slice CT series beside its MR file, an RGB secondary capture the series rules
must skip and a truncated series that must fail alone, with a tiny random CLIP and a calibration, so
every writer runs: Parametric Map, Secondary Capture overlays, the TID 1500 report and the lesion
Segmentation. What it writes is read back with pydicom, checked against `medclip-ad infer` on the same
series, and validated with dciodvfy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    generate_uid,
)

from medclip_ad import __version__
from medclip_ad.errors import UserInputError


def _deploy_python() -> str | None:
    """The interpreter that has the SDK: .ci/run builds one beside the test venv (MEDCLIP_AD_DEPLOY_PYTHON),
    because with the SDK installed every `import monai` also loads Holoscan; else this one, if it has it."""
    configured = os.environ.get("MEDCLIP_AD_DEPLOY_PYTHON")
    if configured:
        return configured
    return sys.executable if importlib.util.find_spec("monai.deploy") is not None else None


DEPLOY_PYTHON = _deploy_python()
pytestmark = pytest.mark.skipif(DEPLOY_PYTHON is None, reason="the MONAI Deploy App SDK comes with the [deploy] "
                                "extra (.ci/run installs it in .venv-deploy and sets MEDCLIP_AD_DEPLOY_PYTHON)")

REPO_ROOT = Path(__file__).resolve().parents[1]
CT_SERIES = Path(get_testdata_file("dicomdirtests/98892001/CT5N", download=False))
MR_FILE = Path(get_testdata_file("MR_small.dcm", download=False))
RGB_CAPTURE = Path(get_testdata_file("SC_rgb.dcm", download=False))  # modality OT: not selected
DETECTOR = {"clip-weights": "random:tiny", "method": "ensemble", "image-size": 56, "layers": [2]}
INFER_FLAGS = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "56", "--layers", "2"]


def _calibration(path: Path) -> None:
    """A calibration for DETECTOR whose pixel threshold marks a lesion, so the app writes a Segmentation."""
    from medclip_ad.config import CaseOptions, DetectorConfig
    from medclip_ad.inference.calibration import Calibration, case_scoring, fit_operating_point
    from medclip_ad.inference.predictor import AnomalyPredictor

    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=56,
                                                layers=(2,)))
    normals = np.linspace(0.1, 0.9, 9)
    calibration = Calibration(model=predictor.provenance(), scoring=case_scoring("volume", CaseOptions()),
                              normal_scores=list(normals), normals=[],
                              operating_points=[fit_operating_point(normals, 0.1)], pixel_percentile=99.9,
                              pixel_threshold=0.0)
    path.write_text(json.dumps(calibration.to_json()), encoding="utf-8")


def _broken_series(path: Path) -> None:
    """An MR series of its own whose pixel data is cut short: it must fail by name, the others go on."""
    dataset = pydicom.dcmread(MR_FILE)
    dataset.SeriesInstanceUID, dataset.SOPInstanceUID = generate_uid(), generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(path)
    path.write_bytes(path.read_bytes()[:-2000])


def _run_app(study: Path, output: Path, models: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([DEPLOY_PYTHON, "-m", "medclip_ad.deploy", "-i", str(study), "-o", str(output),
                           "-m", str(models)], capture_output=True, text=True, env=env, cwd=output.parent,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def app_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("deploy")
    study = root / "study"
    shutil.copytree(CT_SERIES, study / "CT5N")
    shutil.copy(MR_FILE, study / "MR_small.dcm")
    shutil.copy(RGB_CAPTURE, study / "SC_rgb.dcm")
    _broken_series(study / "broken_MR.dcm")
    models = root / "models"
    models.mkdir()
    _calibration(models / "calibration.json")
    (models / "settings.yaml").write_text(yaml.safe_dump({**DETECTOR, "calibration": "calibration.json"}))
    result = _run_app(study, root / "output", models)
    return {"root": root, "study": study, "models": models, "output": root / "output", "result": result}


def _case(app_run: dict, source: Path) -> Path:
    return app_run["output"] / pydicom.dcmread(source, stop_before_pixels=True).SeriesInstanceUID


@pytest.mark.slow
def test_app_scores_the_selected_series_and_writes_every_dicom_output(app_run) -> None:
    result = app_run["result"]
    assert result.returncode == 1  # the broken series fails the app, by name, after the others are written
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("medclip-ad deploy: 1 series failed (2 written): ")
    assert str(app_run["study"] / "broken_MR.dcm") in last_line
    ct_case, mr_case = _case(app_run, next(CT_SERIES.iterdir())), _case(app_run, MR_FILE)
    assert sorted(p.name for p in app_run["output"].iterdir()) == sorted([ct_case.name, mr_case.name])  # no SC
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: pydicom.dcmread(p)
               for p in CT_SERIES.iterdir()}
    first_source = next(iter(sources.values()))
    scores = json.loads((ct_case / "scores.json").read_text())
    assert scores["kind"] == "volume" and len(scores["slice_scores"]) == 5 and "flagged" in scores

    parametric_map = pydicom.dcmread(ct_case / "anomaly_map.dcm")
    assert parametric_map.SOPClassUID == ParametricMapStorage and int(parametric_map.NumberOfFrames) == 5
    assert (parametric_map.StudyInstanceUID, parametric_map.PatientID) == (first_source.StudyInstanceUID,
                                                                           first_source.PatientID)
    referenced = {item.ReferencedSOPInstanceUID for frame in parametric_map.PerFrameFunctionalGroupsSequence
                  for derivation in frame.DerivationImageSequence for item in derivation.SourceImageSequence}
    assert referenced == set(sources)
    mapping = parametric_map.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    stored_max = float(parametric_map.pixel_array.max()) * float(mapping.RealWorldValueSlope)
    stored_max += float(mapping.RealWorldValueIntercept)
    map_volume = np.asarray(nib.load(ct_case / "anomaly_map.nii.gz").dataobj)
    assert abs(stored_max - float(map_volume.max())) <= float(mapping.RealWorldValueSlope)

    captures = sorted((ct_case / "dicom_overlays").iterdir())
    assert len(captures) == 5
    for path in captures:
        capture = pydicom.dcmread(path)
        assert capture.SOPClassUID == SecondaryCaptureImageStorage and capture.pixel_array.shape == (16, 16, 3)
        assert capture.StudyInstanceUID == first_source.StudyInstanceUID

    report = pydicom.dcmread(ct_case / "findings_sr.dcm")
    assert report.SOPClassUID == Comprehensive3DSRStorage
    numbers = [float(item.MeasuredValueSequence[0].NumericValue) for item in _content_items(report)
               if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == "ANOMALY_SCORE"]
    assert numbers and abs(numbers[0] - scores["score"]) < 1e-4

    segmentation = pydicom.dcmread(ct_case / "lesion_seg.dcm")
    assert segmentation.SOPClassUID == SegmentationStorage
    assert segmentation.StudyInstanceUID == first_source.StudyInstanceUID


def _content_items(dataset) -> list:
    items = []
    for item in dataset.get("ContentSequence", []):
        items.append(item)
        items.extend(_content_items(item))
    return items


@pytest.mark.slow
def test_app_gives_the_scores_infer_gives(app_run, tmp_path) -> None:
    from medclip_ad.cli.main import main

    code = main(["infer", str(app_run["study"] / "CT5N"), "--out", str(tmp_path / "infer"), *INFER_FLAGS,
                 "--dicom-out", "both", "--calibration", str(app_run["models"] / "calibration.json")])
    assert code == 0
    by_infer = json.loads((tmp_path / "infer" / "CT5N" / "scores.json").read_text())
    by_app = json.loads((_case(app_run, next(CT_SERIES.iterdir())) / "scores.json").read_text())
    assert by_app["score"] == pytest.approx(by_infer["score"], abs=1e-6)
    np.testing.assert_allclose(by_app["slice_scores"], by_infer["slice_scores"], atol=1e-6)
    assert by_app["model"] == by_infer["model"] and by_app["flagged"] == by_infer["flagged"]


def _dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) is installed by .ci/run")
def test_app_outputs_pass_dciodvfy_with_no_errors_beyond_the_source(app_run) -> None:
    source_errors = _dciodvfy_errors(next(CT_SERIES.iterdir()))
    ct_case = _case(app_run, next(CT_SERIES.iterdir()))
    outputs = [ct_case / "anomaly_map.dcm", ct_case / "findings_sr.dcm", ct_case / "lesion_seg.dcm",
               *sorted((ct_case / "dicom_overlays").iterdir())]
    for path in outputs:
        assert _dciodvfy_errors(path) <= source_errors, path.name


def test_app_yaml_states_the_package_version() -> None:
    manifest = yaml.safe_load((REPO_ROOT / "medclip_ad" / "deploy" / "app.yaml").read_text())
    assert str(manifest["application"]["version"]) == __version__
    assert manifest["application"]["inputFormats"] == ["file"]


def test_settings_default_to_both_dicom_outputs_and_resolve_files_in_the_model_folder(tmp_path) -> None:
    from medclip_ad.deploy.settings import DEFAULT_SERIES_RULES, load_settings

    defaults = load_settings(tmp_path / "absent")
    assert defaults.options.dicom_out == "both" and defaults.detector.clip_weights == "openai"
    assert defaults.series_rules == DEFAULT_SERIES_RULES
    (tmp_path / "weights.pt").write_bytes(b"")
    (tmp_path / "settings.yaml").write_text("clip-weights: weights.pt\naggregation: mean\ndicom-out: parametric-map\n")
    settings = load_settings(tmp_path)
    assert settings.detector.clip_weights == str((tmp_path / "weights.pt").resolve())
    assert (settings.options.aggregation, settings.options.dicom_out) == ("mean", "parametric-map")


@pytest.mark.parametrize("text, message", [
    ("prompts: ../outside.safetensors\n", "outside the model folder"),
    ("prompts: missing.safetensors\n", "no file"),
    ("aggregation: median\n", "'median' is not one of"),
    ("colour: red\n", "unknown option 'colour'"),
])
def test_settings_refuse_bad_values_in_one_line(tmp_path, text, message) -> None:
    from medclip_ad.deploy.settings import load_settings

    (tmp_path / "outside.safetensors").write_bytes(b"")
    models = tmp_path / "models"
    models.mkdir()
    (models / "settings.yaml").write_text(text)
    with pytest.raises(UserInputError, match=message):
        load_settings(models)


def test_series_rules_file_replaces_the_default_and_a_bad_one_is_refused(tmp_path) -> None:
    from medclip_ad.deploy.settings import SERIES_RULES_FILE, load_settings

    rules = {"selections": [{"name": "CT only", "conditions": {"Modality": "(?i)^CT$"}}]}
    (tmp_path / SERIES_RULES_FILE).write_text(json.dumps(rules))
    assert load_settings(tmp_path).series_rules == rules
    (tmp_path / SERIES_RULES_FILE).write_text("[1, 2]")
    with pytest.raises(UserInputError, match="selections"):
        load_settings(tmp_path)
