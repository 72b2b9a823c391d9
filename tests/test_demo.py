"""`medclip-ad demo`: the whole workflow on a synthetic study, with the loud offline fallback."""

from __future__ import annotations

import json

import nibabel as nib
import pytest
from medclip_ad.cli.main import main
from medclip_ad.modeling import weights_download


def test_offline_demo_falls_back_loudly_and_writes_both_cases(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights_download, "_hub_cached", lambda config: None)
    monkeypatch.setenv("MEDCLIP_AD_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("MEDCLIP_AD_OFFLINE", "1")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--image-size", "224", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "No real CLIP weights" in captured.err and "random:tiny" in captured.err
    assert f"medclip-ad view {out / 'results'}/" in captured.out
    for case in ("dicom", "synthetic_ct"):
        document = json.loads((out / "results" / case / "scores.json").read_text())
        assert document["model"]["random_weights"] is True and document["model"]["method"] == "ensemble"
        assert document["intensity"] == "window soft_tissue" and len(document["slice_scores"]) == 32
        assert nib.load(out / "results" / case / "anomaly_map.nii.gz").shape == (128, 128, 32)
    dicom = json.loads((out / "results" / "dicom" / "scores.json").read_text())
    nifti = json.loads((out / "results" / "synthetic_ct" / "scores.json").read_text())
    assert dicom["slice_scores"] == pytest.approx(nifti["slice_scores"], abs=1e-5)  # same study, same numbers
    assert main(["demo", "--out", str(out), "--clip-weights", "random:tiny", "--image-size", "224"]) == 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")  # demo refuses before touching anything
    assert main(["demo", "--out", str(tmp_path), "--clip-weights", "random:tiny"]) == 2
    assert "not a medclip-ad demo folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_explicit_weights_never_fall_back(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--clip-weights", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: CLIP weights file not found" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
