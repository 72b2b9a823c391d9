"""The viewer shows a calibrated result's verdict and lesion components as text, with jumps to each
component's peak slice; a result without a calibration shows none of it."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.calibration import Calibration, fit_operating_point
from medclip_ad.inference.case import CaseOptions, run_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.synthetic import make_synthetic_study
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(APP_DIR))

from medclip_viewer.findings_panel import FINDING_KEY_PREFIX  # noqa: E402
from medclip_viewer.launch import CASE_ENV, DATA_ROOT_ENV  # noqa: E402
from medclip_viewer.state import KEY_PLANE, KEY_SECTION, KEY_THRESHOLD, slice_key  # noqa: E402

FAST_CONFIG = DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224, device="cpu")


@pytest.fixture(scope="module")
def calibrated_case(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("viewer_findings")
    study = make_synthetic_study(root / "study", shape=(48, 40, 8))
    predictor = AnomalyPredictor(FAST_CONFIG)
    scan = read_case(discover_cases([study.nifti_path])[0][0])
    normals = list(np.linspace(0.0, 0.2, 19))
    # a pixel threshold low enough that this study has several components
    calibration = Calibration(model=predictor.provenance(), scoring={"kind": "volume"}, normal_scores=normals,
                              normals=[], operating_points=[fit_operating_point(normals, 0.05)], pixel_percentile=99.9,
                              pixel_threshold=0.0)
    probe = run_case(predictor, scan, root / "probe", CaseOptions())
    map_values = np.asarray(nib.load(root / "probe" / probe["case"] / "anomaly_map.nii.gz").dataobj)
    calibration.pixel_threshold = float(np.quantile(map_values, 0.995))
    document = run_case(predictor, scan, root / "results", CaseOptions(calibration=calibration))
    assert len(document["components"]) >= 2
    return root / "results" / document["case"], document


def test_verdict_percentile_and_components_are_text_with_jumps(calibrated_case, monkeypatch) -> None:
    case, document = calibrated_case
    monkeypatch.setenv(DATA_ROOT_ENV, str(case.parents[1]))  # the scored study lies beside the results
    monkeypatch.setenv(CASE_ENV, str(case))
    at = AppTest.from_file(str(APP_DIR / "viewer.py"), default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [t for t in at.text if "calibration normals" in t.value]  # its tab below the viewer is closed
    at.session_state[KEY_SECTION] = "Findings"
    at.run()
    texts = [t.value for t in at.text]
    verdict = "FLAGGED" if document["flagged"] else "not flagged"
    assert f"{verdict} at FPR 5% (score > {document['threshold']:.4f})" in texts
    assert f"percentile among 19 calibration normals: {document['percentile']:.1f}" in texts
    assert f"{len(document['components'])} lesion component(s)" in texts
    # the overlay starts by colouring what the calibration calls lesion (to the slider's 1 % steps)
    step = document["map_range"][1] / 100
    assert at.slider(key=KEY_THRESHOLD).value == pytest.approx(document["calibration"]["pixel_threshold"], abs=step)
    [table] = [frame for frame in at.dataframe if "volume_ml" in frame.value.columns]  # beside the worklist's
    assert len(table.value) == len(document["components"])
    assert list(table.value["volume_ml"]) == pytest.approx([c["volume_ml"] for c in document["components"]])
    second = document["components"][1]
    at.radio(key=KEY_PLANE).set_value("coronal").run()
    at.button(key=f"{FINDING_KEY_PREFIX}{second['label']}").click().run()
    assert not at.exception
    assert at.radio(key=KEY_PLANE).value == document["slice_axis"]
    assert at.session_state[slice_key(document["slice_axis"])] == second["peak_slice"]
