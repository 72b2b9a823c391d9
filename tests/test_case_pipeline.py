"""`infer` reads the next case and writes the previous one while the model scores a case, with the same
outputs and the same one-line failures as one case after another."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from medclip_ad.cli.main import main
from medclip_ad.inference import case as case_module
from PIL import Image

FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "224", "--device", "cpu"]
NAMES = ("a", "b", "c")


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_a_case_is_written_while_the_next_one_is_scored(images, tmp_path, monkeypatch):
    predict_scan, write_case = case_module.predict_scan, case_module.write_case
    scoring_started = {name: threading.Event() for name in NAMES}
    writers, overlapped = [], []

    def recording_predict(predictor, scan, *args, **kwargs):
        scoring_started[scan.name].set()
        return predict_scan(predictor, scan, *args, **kwargs)

    def waiting_write(predictor, scan, *args, **kwargs):
        writers.append(threading.current_thread().name)
        if scan.name == "a":  # passes only if b is scored before a's writing ends
            overlapped.append(scoring_started["b"].wait(timeout=30))
        return write_case(predictor, scan, *args, **kwargs)

    monkeypatch.setattr(case_module, "predict_scan", recording_predict)
    monkeypatch.setattr(case_module, "write_case", waiting_write)
    out = tmp_path / "out"
    assert main(["infer", str(images), "--out", str(out), *FAST]) == 0
    assert overlapped == [True]
    assert len(writers) == 3 and all(name.startswith("case-writer") for name in writers)
    monkeypatch.undo()
    sequential = tmp_path / "sequential"
    for name in NAMES:  # one case per run: nothing to overlap
        assert main(["infer", str(images / f"{name}.png"), "--out", str(sequential), *FAST]) == 0
    for name in NAMES:
        np.testing.assert_array_equal(np.load(out / name / "anomaly_map.npy"),
                                      np.load(sequential / name / "anomaly_map.npy"))
        assert (json.loads((out / name / "scores.json").read_text())["score"]
                == json.loads((sequential / name / "scores.json").read_text())["score"])
    assert (out / "results.csv").read_text().count("\n") == 4  # header and three cases


def test_a_case_that_fails_to_be_written_is_named_and_the_rest_are_written(images, tmp_path, monkeypatch, capsys):
    write_case = case_module.write_case

    def failing_write(predictor, scan, *args, **kwargs):
        if scan.name == "b":
            raise OSError(28, "No space left on device")
        return write_case(predictor, scan, *args, **kwargs)

    monkeypatch.setattr(case_module, "write_case", failing_write)
    out = tmp_path / "out"
    assert main(["infer", str(images), "--out", str(out), *FAST]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("medclip-ad: error:")]
    assert any("b.png" in line and "No space left on device" in line for line in lines)
    assert not any("a.png" in line or "c.png" in line for line in lines)
    assert (out / "a" / "scores.json").is_file() and (out / "c" / "scores.json").is_file()
    assert not (out / "b").exists()
