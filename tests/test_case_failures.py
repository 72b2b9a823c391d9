"""A run goes on past any failing case: one line per failure, tracebacks of unexpected ones in errors.log,
the summary at the end, --resume, SIGTERM as Ctrl-C, and `--dicom-out both` keeping what it can.

The tiny model is built once for the module (see bad_input_corpus.reuse_tiny_model).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from medclip_ad.bundle.entrypoints import CaseInference
from medclip_ad.cli.main import main
from medclip_ad.errors import UserInputError, one_line
from medclip_ad.inference.worklist import RESULTS_TABLE
from medclip_ad.io.discovery import discover_cases
from medclip_ad.output_files import ERROR_LOG_FILE, SCORES_FILE
from PIL import Image

from bad_input_corpus import FAST, reuse_tiny_model
from dicom_factory import write_series


@pytest.fixture(scope="module", autouse=True)
def tiny_model_loaded_once(tiny_backbone):
    with pytest.MonkeyPatch.context() as patch:
        reuse_tiny_model(patch, tiny_backbone)
        yield


@pytest.fixture()
def three_images(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("medclip-ad: error:")]


def test_unexpected_errors_in_some_cases_never_stop_the_run(three_images, tmp_path, capsys, monkeypatch):
    import torch
    from medclip_ad.inference import case

    predict_scan = case.predict_scan

    def failing(predictor, scan, options, progress=None):
        if scan.name == "a":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if scan.name == "b":
            raise RuntimeError("highdicom could not encode the frame\nsecond line of detail")
        return predict_scan(predictor, scan, options, progress)

    monkeypatch.setattr(case, "predict_scan", failing)
    out = tmp_path / "out"
    assert main(["infer", str(three_images), "--out", str(out), *FAST]) == 1
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    oom = [line for line in lines if "a.png" in line]
    runtime = [line for line in lines if "b.png" in line]
    # each failure once as it happens and once in the closing summary, each naming its input
    assert len(oom) == 2 and len(runtime) == 2 and len(lines) == 4
    assert "out of GPU memory" in oom[0] and "--batch-size" in oom[0]
    assert "unexpected RuntimeError: highdicom could not encode the frame" in runtime[0]
    assert "second line" not in captured.err and "Traceback" not in captured.err
    assert "2 input(s) failed:" in captured.err and "1 case(s) written" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["c", ERROR_LOG_FILE, RESULTS_TABLE]
    log = (out / ERROR_LOG_FILE).read_text()
    assert log.count("Traceback (most recent call last)") == 2 and "second line of detail" in log
    assert "a.png" in log and "OutOfMemoryError" in log


def test_an_unexpected_error_outside_any_case_is_one_line_with_a_log(three_images, tmp_path, capsys, monkeypatch):
    from medclip_ad.io import discovery

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in discovery")

    monkeypatch.setattr(discovery, "discover_cases", broken)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["infer", str(three_images), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [line for line in err.splitlines() if line.strip()]
    assert "unexpected RuntimeError: a bug in discovery" in err and str(out / ERROR_LOG_FILE) in err
    assert "a bug in discovery" in (out / ERROR_LOG_FILE).read_text()


def test_resume_skips_finished_cases_only(three_images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", str(three_images / "a.png"), str(three_images / "b.png"), "--out", str(out), *FAST]) == 0
    finished = (out / "a" / SCORES_FILE).stat().st_mtime_ns
    capsys.readouterr()
    assert main(["infer", str(three_images), "--out", str(out), *FAST]) == 2  # without --resume: refused up front
    assert "--resume" in capsys.readouterr().err
    assert main(["infer", str(three_images), "--out", str(out), "--resume", *FAST]) == 0
    assert "resuming: 2 case(s) already finished" in capsys.readouterr().out
    assert (out / "a" / SCORES_FILE).stat().st_mtime_ns == finished
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c", RESULTS_TABLE]
    assert (out / RESULTS_TABLE).read_text().count("./") == 3  # the worklist lists the resumed cases too
    (out / "c" / SCORES_FILE).unlink()  # a folder without scores.json was not finished by medclip-ad
    assert main(["infer", str(three_images), "--out", str(out), "--resume", *FAST]) == 2
    assert "c: output case folder already exists" in capsys.readouterr().err


def test_sigterm_finishes_the_case_being_written_and_drops_the_one_being_scored(three_images, tmp_path, capsys,
                                                                                 monkeypatch):
    from medclip_ad.inference import case

    write_png, predict_scan = case.write_png, case.predict_scan
    b_scoring = threading.Event()

    def terminated_while_writing(path, image):
        write_png(path, image)
        b_scoring.wait(timeout=30)
        os.kill(os.getpid(), signal.SIGTERM)  # a's staging folder holds a file; b is being scored

    def scoring(predictor, scan, *args, **kwargs):
        if scan.name == "b":
            b_scoring.set()
            time.sleep(5)  # the signal arrives while b is scored
        return predict_scan(predictor, scan, *args, **kwargs)

    monkeypatch.setattr(case, "write_png", terminated_while_writing)
    monkeypatch.setattr(case, "predict_scan", scoring)
    out = tmp_path / "out"
    assert main(["infer", str(three_images / "a.png"), str(three_images / "b.png"), "--out", str(out), *FAST]) == 143
    assert "terminated" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == ["a"]  # no hidden .partial folder, no b
    assert (out / "a" / SCORES_FILE).is_file() and (out / "a" / "overlay.png").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_dicom_out_both_writes_the_overlays_when_no_parametric_map_is_possible(tmp_path, capsys):
    series = tmp_path / "series"
    for path in write_series(series, 3):
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    out = tmp_path / "out"
    assert main(["infer", str(series), "--out", str(out), "--dicom-out", "both", *FAST]) == 1
    captured = capsys.readouterr()
    (line,) = error_lines(captured.err)
    assert "parametric map not written" in line and "FrameOfReferenceUID" in line and str(series) in line
    document = json.loads((out / "series" / SCORES_FILE).read_text())
    assert "FrameOfReferenceUID" in document["dicom_not_written"]["parametric_map"]
    assert not (out / "series" / "anomaly_map.dcm").exists()
    overlays = sorted((out / "series" / "dicom_overlays").iterdir())
    assert overlays and all(pydicom.dcmread(p).Modality for p in overlays)
    assert main(["infer", str(series), "--out", str(tmp_path / "pm"), "--dicom-out", "parametric-map", *FAST]) == 2
    assert not (tmp_path / "pm" / "series").exists()


def test_the_bundle_loop_goes_on_past_any_failure(three_images, tmp_path, caplog):
    out = tmp_path / "out"

    def score(source):
        if source.name == "a":
            raise RuntimeError("applying transform") from MemoryError()
        if source.name == "b":
            raise RuntimeError("applying transform") from UserInputError(f"{source.location}: unreadable")
        return source

    def write(source):
        (out / source.name).mkdir(parents=True)
        (out / source.name / SCORES_FILE).write_text(json.dumps({"input": str(source.location)}))
        return out / source.name

    inference = CaseInference(str(three_images), lambda source: source, score, write, out)
    with pytest.raises(UserInputError, match="2 input"):
        inference.run()
    messages = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert any("a.png" in m and "out of host memory" in m for m in messages)
    assert any(m.endswith("b.png: unreadable") for m in messages)
    assert sorted(p.name for p in out.iterdir()) == ["c", ERROR_LOG_FILE]
    assert "MemoryError" in (out / ERROR_LOG_FILE).read_text()


def test_an_unreadable_sub_folder_is_reported_and_the_rest_found(three_images, monkeypatch):
    hidden_away = three_images / "private"
    hidden_away.mkdir()
    scandir = os.scandir

    def refusing(path="."):
        if Path(path) == hidden_away:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    sources, problems = discover_cases([three_images])
    assert sorted(source.name for source in sources) == ["a", "b", "c"]
    assert [(problem.path, problem.message) for problem in problems] == [
        (hidden_away, "folder cannot be read (Permission denied)")]


def test_control_characters_are_escaped_in_error_lines():
    assert one_line("scan\nname\r\x1b[2J\x85.png") == "scan\\nname\\r\\x1b[2J\\x85.png"
    assert one_line("Zürich ünïcode") == "Zürich ünïcode"
