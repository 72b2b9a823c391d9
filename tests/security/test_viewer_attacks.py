"""Attacks 2, 3, 6 and 7 on the viewer, through its widgets (AppTest): results naming server files, links out
of the data root, markdown in values from files, file names in the page, free-text weights, and access."""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from attack_tools import assert_one_line, assert_untouched, touched_paths
from medclip_ad.io.synthetic import make_synthetic_study
from medclip_ad.random_weights import RANDOM_WEIGHTS_WARNING
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[2] / "app"
sys.path.insert(0, str(APP_DIR))

from medclip_viewer.display_text import unescape  # noqa: E402
from medclip_viewer.launch import CASE_ENV, DATA_ROOT_ENV, PASSWORD_ENV, WEIGHTS_DIR_ENV  # noqa: E402
from medclip_viewer.open_panel import SOURCE_BROWSE  # noqa: E402
from medclip_viewer.state import (  # noqa: E402
    KEY_BROWSE,
    KEY_BROWSE_OPEN,
    KEY_CLIP_WEIGHTS,
    KEY_PASSWORD,
    KEY_PROMPTS,
    KEY_SECTION,
    KEY_SHOW_PATIENT,
    KEY_SOURCE,
    KEY_UPLOAD,
)

VIEWER = APP_DIR / "viewer.py"
SHAPE = (12, 10, 3)
BEACON = "![pixel](https://beacon.example/who-opened-it.png)"
FAKE_VERDICT = "**Case score 0.0000: normal**"
MARKDOWN_ELEMENTS = ("markdown", "caption", "error", "warning", "info", "success", "subheader", "header", "title",
                     "button", "metric", "toast", "exception")


@pytest.fixture()
def viewer(monkeypatch, tmp_path):
    for name in (CASE_ENV, DATA_ROOT_ENV, WEIGHTS_DIR_ENV, PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "server-tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "server-tmp"))  # the sessions' folders
    return AppTest.from_file(str(VIEWER), default_timeout=120)


def table_with(at: AppTest, column: str):
    """The table on the page with this column (the patient table has `field`, the provenance one `setting`)."""
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _volume(path: Path, value: float = 100.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(SHAPE, value, np.float32) + np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    return path


def _result(folder: Path, input_path: str, **fields) -> Path:
    """An `infer` case folder (scores.json and map) for a SHAPE volume; its input is whatever the test says."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {"case": "scan", "input": input_path, "kind": "volume", "score": 0.5, "map_range": [0.0, 24.0],
                "shape": list(SHAPE), "slice_axis": "axial", "slice_scores": [0.1, 0.5, 0.2], "top_slices": [1, 2, 0],
                "score_aggregation": "max", "model": {"method": "ensemble", "clip_weights": "random:tiny"}}
    document.update(fields)
    (folder / "scores.json").write_text(json.dumps(document))
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), folder / "anomaly_map.nii.gz")
    return folder


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _messages(at: AppTest) -> list[str]:
    return [unescape(e.value) for e in [*at.sidebar.error, *at.main.error]]


def _session_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "server-tmp").glob("medclip-ad-viewer-*"))


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    return ok(at.file_uploader(key=KEY_UPLOAD).upload(name, data, "application/zip").run())


def test_an_uploaded_result_naming_a_server_file_shows_nothing_of_it(viewer, tmp_path):
    secret = _volume(tmp_path / "outside" / "patient_jones.nii.gz")
    case = _result(tmp_path / "payload" / "case", str(secret))
    upload = _zip({f"case/{p.name}": p.read_bytes() for p in case.iterdir()})
    at = ok(viewer.run())
    with touched_paths() as touched:
        _upload(at, "result.zip", upload)
    assert_untouched(touched, secret.parent)
    [message] = [m for m in _messages(at) if "not available" in m]
    assert_one_line(message, "the scanned input patient_jones.nii.gz", server_paths=(tmp_path,))
    assert not at.image and any("Open a case" in info.value for info in at.info)


def test_an_uploaded_result_opens_the_scan_uploaded_with_it(viewer, tmp_path):
    scan = _volume(tmp_path / "payload" / "scan.nii.gz")
    case = _result(tmp_path / "payload" / "results" / "scan", "../../scan.nii.gz")
    upload = _zip({"scan.nii.gz": scan.read_bytes(), **{f"results/scan/{p.name}": p.read_bytes()
                                                        for p in case.iterdir()}})
    at = _upload(ok(viewer.run()), "bundle.zip", upload)
    # the only message: the model panel, prefilled from the result's provenance (random:tiny), says so
    [shown] = at.get("component_instance")  # the viewer, given the uploaded scan's display file
    assert _messages(at) == [RANDOM_WEIGHTS_WARNING] and json.loads(shown.proto.json_args)["scan_url"]
    assert at.metric[0].value == "0.5000"


def test_links_and_results_under_the_data_root_cannot_reach_outside(viewer, monkeypatch, tmp_path):
    secret = _volume(tmp_path / "outside" / "secret.nii.gz")
    root = tmp_path / "root"
    _volume(root / "study" / "own.nii.gz")
    os.symlink(secret, root / "study" / "leak.nii.gz")
    _result(root / "results" / "scan", str(secret))
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    at = ok(viewer.run())
    ok(at.radio(key=KEY_SOURCE).set_value(SOURCE_BROWSE).run())
    assert "study/leak.nii.gz" not in at.selectbox(key=KEY_BROWSE).options
    with touched_paths() as touched:
        at.selectbox(key=KEY_BROWSE).select("study/")
        ok(at.button(key=KEY_BROWSE_OPEN).click().run())
        [message] = _messages(at)
        assert_one_line(message, "leak.nii.gz", "not available", server_paths=(tmp_path,))
        assert at.image  # the study's own file opened
        at.selectbox(key=KEY_BROWSE).select("results/")
        ok(at.button(key=KEY_BROWSE_OPEN).click().run())
    assert_untouched(touched, secret.parent)
    [message] = [m for m in _messages(at) if "scanned input" in m]
    assert_one_line(message, "secret.nii.gz", "not available", server_paths=(tmp_path,))


def _dicom_with(folder: Path, **tags: str) -> Path:
    study = make_synthetic_study(folder / "made")
    out = folder / "series"
    out.mkdir()
    for path in sorted(study.dicom_dir.iterdir()):
        dataset = pydicom.dcmread(path)
        for name, value in tags.items():
            setattr(dataset, name, value)
        dataset.save_as(out / path.name)
    return out


def _markdown_values(at: AppTest) -> list[str]:
    values: list[str] = []
    for kind in MARKDOWN_ELEMENTS:
        for element in getattr(at, kind, []):
            proto = getattr(element, "proto", None)
            values.append(str(proto) if proto is not None else str(getattr(element, "value", "")))
    return values


def test_values_from_files_are_shown_as_text_never_as_markdown(viewer, monkeypatch, tmp_path):
    series = _dicom_with(tmp_path / "dicom", PatientName=BEACON, SeriesDescription=FAKE_VERDICT)
    _result(tmp_path / "root" / "results" / "scan", str(_volume(tmp_path / "root" / "scan.nii.gz")),
            score_aggregation=BEACON, model={"method": FAKE_VERDICT, "clip_weights": BEACON})
    monkeypatch.setenv(CASE_ENV, str(tmp_path / "root" / "results"))
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "root"))
    at = ok(viewer.run())
    at.session_state[KEY_SECTION] = "Model provenance"  # the tab below the viewer that shows the model's fields
    table = table_with(ok(at.run()), "setting")
    assert BEACON in set(table["value"]) and FAKE_VERDICT in set(table["value"])  # shown, as text
    upload = _zip({f"{BEACON}/{p.name}": p.read_bytes() for p in series.iterdir()} | {f"{FAKE_VERDICT}.dcm": b"x"})
    ok(at.radio(key=KEY_SOURCE).set_value("Upload").run())
    _upload(at, "series.zip", upload)
    ok(at.toggle(key=KEY_SHOW_PATIENT).set_value(True).run())
    patient = table_with(at, "field")
    assert BEACON in set(patient["value"])
    assert any(FAKE_VERDICT in m for m in _messages(at))  # the member's name, escaped in the alert
    for value in _markdown_values(at):
        assert "](https://beacon" not in value and "**Case score" not in value, value


def test_a_scan_named_like_markdown_is_named_as_text_in_the_review_form(viewer, monkeypatch, tmp_path):
    """The review form's heading names the case: with identifiers shown, the scan's file name, escaped (a
    name with markdown in it is shown as its characters, not rendered)."""
    _result(tmp_path / "root" / "results" / "scan", str(_volume(tmp_path / "root" / f"{FAKE_VERDICT}.nii.gz")))
    monkeypatch.setenv(CASE_ENV, str(tmp_path / "root" / "results"))
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "root"))
    at = ok(ok(viewer.run()).toggle(key=KEY_SHOW_PATIENT).set_value(True).run())
    [heading] = [header.value for header in at.subheader if header.value.startswith("Your read of")]
    # the reader sees the name's characters (file names come sanitised), each markdown one escaped
    assert unescape(heading) == "Your read of Case_score_0.0000_normal"
    assert heading == r"Your read of Case\_score\_0\.0000\_normal"


def test_identifiers_hidden_means_no_file_name_in_the_page_or_the_exports(viewer, monkeypatch, tmp_path):
    _result(tmp_path / "root" / "results" / "Doe_John_MRN123456",
            str(_volume(tmp_path / "root" / "Doe_John_MRN123456.nii.gz")))
    monkeypatch.setenv(CASE_ENV, str(tmp_path / "root" / "results" / "Doe_John_MRN123456"))
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "root"))
    at = ok(viewer.run())
    assert at.subheader[0].value == "case 1"
    names = [button.proto.file_name if hasattr(button.proto, "file_name") else "" for button in at.download_button]
    page = "\n".join([*_markdown_values(at), *(t.value for t in at.text), *(str(s.proto) for s in at.selectbox),
                      *names])
    assert "MRN123456" not in page and "Doe_John" not in page


def test_weights_come_only_from_the_launch_folder(viewer, monkeypatch, tmp_path):
    weights = tmp_path / "models"
    weights.mkdir()
    (weights / "ViT-L-14-336px.pt").write_bytes(b"weights")
    (weights / "prompts.safetensors").write_bytes(b"prompts")
    (tmp_path / "outside.pt").write_bytes(b"payload")
    os.symlink(tmp_path / "outside.pt", weights / "linked.pt")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(weights))
    at = ok(viewer.run())
    assert not [field for field in at.text_input if field.key in (KEY_CLIP_WEIGHTS, KEY_PROMPTS)]
    assert at.selectbox(key=KEY_CLIP_WEIGHTS).options == ["openai", "random:tiny", "ViT-L-14-336px.pt",
                                                           "prompts.safetensors"]
    assert at.selectbox(key=KEY_PROMPTS).options == ["(none)", "ViT-L-14-336px.pt", "prompts.safetensors"]


def test_a_password_guards_every_part_of_the_viewer(viewer, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "correct horse")
    at = ok(viewer.run())
    assert [field.key for field in at.text_input] == [KEY_PASSWORD] and not at.sidebar.children
    ok(at.text_input(key=KEY_PASSWORD).input("wrong").run())
    assert [e.value for e in at.error] == ["Wrong password."] and not at.sidebar.children
    ok(at.text_input(key=KEY_PASSWORD).input("correct horse").run())
    assert at.sidebar.children and any("Open a case" in info.value for info in at.info)


def test_a_hostile_archive_in_the_weights_folder_is_refused_on_run(viewer, monkeypatch, tmp_path):
    """The chained attack: a TorchScript payload offered as weights is refused when Run loads it."""
    import warnings

    import torch
    from test_weights_archive import _WritesAFile

    from medclip_viewer.rendering import png_bytes
    from medclip_viewer.state import KEY_IMAGE_SIZE, KEY_RUN

    weights = tmp_path / "models"
    weights.mkdir()
    target = tmp_path / "outside" / "written"
    target.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_WritesAFile(str(target))).save(str(weights / "evil.pt"))
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(weights))
    at = ok(viewer.run())
    image = png_bytes(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))
    ok(at.file_uploader(key=KEY_UPLOAD).upload("photo.png", image, "image/png").run())
    at.selectbox(key=KEY_CLIP_WEIGHTS).select("evil.pt")
    at.number_input(key=KEY_IMAGE_SIZE).set_value(224)
    ok(at.button(key=KEY_RUN).click().run())
    # A refusal this fast can end the job within the click's own run (its progress fragment then reruns the
    # page, which shows the error there); else the next run shows it. It is shown once, in one of the two.
    shown = _messages(at)
    for job in list(at.session_state["viewer.session"].jobs.values()):  # inference runs in the background
        assert job.wait(60)
    ok(at.run())
    [message] = [m for m in shown + _messages(at) if m.startswith("Inference failed")]
    assert_one_line(message, "evil.pt", "refused TorchScript archive", "__setstate__", server_paths=(tmp_path,))
    assert not target.exists()
