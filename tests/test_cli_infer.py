"""`medclip-ad infer` on 2-D inputs: the output contract, provenance, and every bad-input path.

A tiny random CLIP at 224 px keeps these fast; the reference numbers are checked in test_parity.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from medclip_ad.cli.main import main
from PIL import Image

FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "224", "--device", "cpu"]


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(folder / "colour.png")
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8)).save(folder / "grey.jpg")
    tifffile.imwrite(folder / "sixteen.tif", rng.integers(0, 65535, (70, 30), dtype=np.uint16))
    return folder


def test_folder_of_images_follows_the_output_contract(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", str(images), "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.err
    for case, shape in {"colour": (60, 90), "grey": (50, 40), "sixteen": (70, 30)}.items():
        folder = out / case
        document = json.loads((folder / "scores.json").read_text())
        anomaly_map = np.load(folder / "anomaly_map.npy")
        assert anomaly_map.dtype == np.float32 and anomaly_map.shape == shape
        assert 0.0 <= anomaly_map.min() and anomaly_map.max() <= 1.0
        assert document["kind"] == "image" and "slice_scores" not in document and 0 < document["score"] < 1
        assert document["model"]["random_weights"] is True and "RANDOM WEIGHTS" in document["warning"]
        assert document["model"]["clip_weights"] == "random:tiny" and document["model"]["layers"] == [24]
        suffix = {"colour": ".png", "grey": ".jpg", "sixteen": ".tif"}[case]
        assert document["package_version"] and document["input"].endswith(folder.name + suffix)
        overlay = np.asarray(Image.open(folder / "overlay.png"))
        assert overlay.shape == (*shape, 3)
    assert document["intensity"].startswith("percentiles")  # the 16-bit TIFF was windowed robustly
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_maps_are_not_normalised_per_image(images, tmp_path):
    out = tmp_path / "out"
    main(["infer", str(images / "colour.png"), str(images / "grey.jpg"), "--out", str(out), *FAST])
    maxima = [np.load(out / case / "anomaly_map.npy").max() for case in ("colour", "grey")]
    minima = [np.load(out / case / "anomaly_map.npy").min() for case in ("colour", "grey")]
    assert maxima[0] != pytest.approx(1.0) and minima[0] != pytest.approx(0.0)
    assert maxima[0] != maxima[1]


def test_existing_case_is_not_overwritten_silently(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", str(images / "grey.jpg"), "--out", str(out), *FAST]) == 0
    marker = out / "grey" / "scores.json"
    before = marker.read_text()
    assert main(["infer", str(images / "grey.jpg"), "--out", str(out), *FAST]) == 2
    assert "already exists" in capsys.readouterr().err and marker.read_text() == before
    assert main(["infer", str(images / "grey.jpg"), "--out", str(out), "--overwrite", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grey", "results.csv"]


def test_an_output_folder_inside_the_input_folder_is_not_read_back(images, capsys):
    out = images / "results"
    assert main(["infer", str(images), "--out", str(out), *FAST]) == 0
    assert main(["infer", str(images), "--out", str(out), "--overwrite", *FAST]) == 0
    assert "3 case(s) written" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["colour", "grey", "results.csv", "sixteen"]


def test_folder_with_a_bad_file_processes_the_good_ones(images, tmp_path, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert main(["infer", str(images), "--out", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["colour", "grey", "results.csv", "sixteen"]


@pytest.mark.parametrize("arguments, message", [
    (["--clip-weights", "/nonexistent/clip.pt"], "/nonexistent/clip.pt: CLIP weights file not found"),
    (["--method", "anomalyclip"], "--prompts"),
    (["--prompts", "/nonexistent/p.safetensors", "--method", "anomalyclip"], "prompt checkpoint not found"),
    (["--device", "cuda"], "no CUDA device"),
    (["--layers", "25"], "between 1 and 24"),
    (["--batch-size", "0"], "at least 1"),
])
def test_bad_options_end_in_one_clear_line(images, tmp_path, arguments, message):
    command = [sys.executable, "-m", "medclip_ad", "infer", str(images / "grey.jpg"), "--out", str(tmp_path / "o"),
               *FAST, *arguments]
    if arguments[0] == "--device" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("medclip-ad: error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "grey").exists()


def test_missing_input_and_unreadable_only_input(tmp_path, capsys):
    assert main(["infer", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "missing.png" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["infer", str(text), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
