"""A real PACS round trip: a pydicom CT series in Orthanc, `pull` (WADO-RS), `calibrate` and `infer` with
every DICOM output, `--dicomweb-url` (STOW-RS), then Orthanc's REST API says what it holds."""

from __future__ import annotations

import io
import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
import requests
from medclip_ad.cli.main import main
from PIL import Image

import orthanc_server
from dicom_factory import template_stored_volume, write_series

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not orthanc_server.available(),
                                reason="Orthanc and its DICOMweb plugin are installed by .ci/run")]
FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "224", "--device", "cpu"]
N_SLICES = 4


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    with orthanc_server.orthanc(root / "orthanc") as url:
        yield root, url


def _study_id(url: str, study_uid: str) -> str:
    [match] = requests.post(f"{url}/tools/lookup", data=study_uid, timeout=10).json()
    assert match["Type"] == "Study"
    return match["ID"]


def test_pull_score_and_store_back_into_the_source_study(pacs, capsys) -> None:
    root, url = pacs
    paths = write_series(root / "source", N_SLICES, stored=template_stored_volume(N_SLICES))
    for path in paths:  # the PACS holds the scanner's series
        assert requests.post(f"{url}/instances", data=path.read_bytes(), timeout=30).ok
    study_uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    dicomweb = f"{url}/dicom-web"

    assert main(["pull", "--dicomweb-url", dicomweb, "--study", study_uid, "--out", str(root / "pulled")]) == 0
    pulled = root / "pulled" / study_uid
    assert len(list(pulled.rglob("*.dcm"))) == N_SLICES
    calibration = root / "calibration.json"
    assert main(["calibrate", str(pulled), "--out", str(calibration), "--fpr", "50%", "--pixel-percentile", "99",
                 *FAST]) == 0
    assert main(["infer", str(pulled), "--out", str(root / "results"), "--dicom-out", "both", "--calibration",
                 str(calibration), "--dicomweb-url", dicomweb, *FAST]) == 0
    [case] = [p for p in (root / "results").iterdir() if p.is_dir()]
    outputs = sorted(case.rglob("*.dcm"))
    names = {p.name for p in outputs}
    assert {"anomaly_map.dcm", "findings_sr.dcm", "lesion_seg.dcm"} <= names and len(outputs) == 3 + N_SLICES
    assert json.loads((case / "scores.json").read_text())["components"]

    study = _study_id(url, study_uid)
    instances = requests.get(f"{url}/studies/{study}/instances", timeout=10).json()
    stored = {item["MainDicomTags"]["SOPInstanceUID"]: item["ID"] for item in instances}
    ours = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in outputs}
    assert set(ours) <= set(stored), "an output is missing from the source study"
    assert len(stored) == N_SLICES + len(ours)

    for uid, path in ours.items():
        identifier = stored[uid]
        if path.name == "anomaly_map.dcm" or path.parent.name == "dicom_overlays":
            frames = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1))
            for frame in range(frames):
                response = requests.get(f"{url}/instances/{identifier}/frames/{frame}/preview", timeout=30)
                assert response.ok and response.headers["Content-Type"].startswith("image/"), (path.name, frame)
                assert Image.open(io.BytesIO(response.content)).size[0] > 0
            assert requests.get(f"{url}/instances/{identifier}/preview", timeout=30).ok
        else:
            content = requests.get(f"{url}/instances/{identifier}/file", timeout=30).content
            dataset = pydicom.dcmread(io.BytesIO(content))
            if path.name == "lesion_seg.dcm":
                seg = hd.seg.Segmentation.from_dataset(dataset)
                assert seg.number_of_segments == 1
            else:
                sr = hd.sr.Comprehensive3DSR.from_dataset(dataset)
                assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    pm = pydicom.dcmread(case / "anomaly_map.dcm")
    assert pm.StudyInstanceUID == study_uid and pm.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert np.asarray(pm.pixel_array).dtype == np.uint16


def test_a_server_that_refuses_gets_one_line(pacs, capsys) -> None:
    root, url = pacs
    code = main(["pull", "--dicomweb-url", f"{url}/no-such-service", "--study", "1.2.3", "--out", str(root / "x")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "was refused (HTTP 404" in error[0]
    code = main(["pull", "--dicomweb-url", f"{url}/dicom-web", "--study", "../../etc", "--out", str(root / "x")])
    assert code == 2 and "not a DICOM UID" in capsys.readouterr().err
    assert not (root / "x").exists()
