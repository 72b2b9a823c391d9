"""Calibration: operating points fitted on generated normal studies hold their false-positive rate on
held-out normals, too few normals and mismatched models or options are refused, and infer/evaluate
apply a calibration (verdict, percentile, lesion mask, results.csv, rates with Wilson intervals)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.cli.main import main
from medclip_ad.datasets.registry import prepare_dataset
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation.operating_points import wilson_interval
from medclip_ad.inference.calibration import Calibration, fit_operating_point, normals_needed, parse_fpr
from medclip_ad.io.synthetic import SyntheticLesion, make_synthetic_study
from scipy import stats

FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "224", "--device", "cpu"]
SHAPE = (32, 32, 1)  # one-slice studies: a study per model call, so dozens of them stay fast
CALIBRATION_NORMALS, HELD_OUT_NORMALS = 39, 40
FPRS = ("10%", "25%")


def _studies(root: Path, count: int, first_seed: int, radius_mm: float = -1.0) -> list[Path]:
    """Generated CT studies (NIfTI); a negative radius means no lesion: a normal study."""
    paths = []
    for seed in range(first_seed, first_seed + count):
        study = make_synthetic_study(root / f"made{seed}", shape=SHAPE, seed=seed,
                                     lesion=SyntheticLesion(radius_mm=radius_mm))
        paths.append(root / f"study{seed:03d}.nii.gz")
        shutil.move(study.nifti_path, paths[-1])
        shutil.rmtree(root / f"made{seed}")
    return paths


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("calibration")
    normals = root / "normals"
    _studies(normals, CALIBRATION_NORMALS, first_seed=0)
    held_out = root / "held_out"
    _studies(held_out, HELD_OUT_NORMALS, first_seed=1000)
    calibration = root / "calibration.json"
    assert main(["calibrate", str(normals), "--out", str(calibration), "--fpr", *FPRS, *FAST]) == 0
    return root, calibration, held_out


def test_fpr_parsing_and_the_normals_each_rate_needs() -> None:
    assert parse_fpr("5%") == pytest.approx(0.05) and parse_fpr("0.1") == pytest.approx(0.1)
    assert [normals_needed(f) for f in (0.01, 0.05, 0.10, 0.25)] == [99, 19, 9, 3]
    for text in ("0%", "100%", "abc", "1.5"):
        with pytest.raises(UserInputError):
            parse_fpr(text)
    scores = np.random.default_rng(0).normal(size=98)
    with pytest.raises(UserInputError, match="FPR of 1% needs at least 99 normals, got 98; add normals"):
        fit_operating_point(scores, 0.01)
    assert fit_operating_point(np.append(scores, 5.0), 0.01).threshold == 5.0  # 99: the highest normal


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.10])
def test_thresholds_hold_their_fpr_on_held_out_normals(fpr: float) -> None:
    """Scores of generated normals (a skewed distribution): the held-out FPR lies inside the recorded interval,
    and over many calibrations the mean FPR is the expected one (at most the requested)."""
    rng = np.random.default_rng(int(fpr * 1000))
    held_out = rng.gamma(2.0, size=200_000)
    point = fit_operating_point(rng.gamma(2.0, size=500), fpr)
    observed = float(np.mean(held_out > point.threshold))
    low, high = point.fpr_interval
    assert low <= observed <= high and point.fpr_upper_bound >= observed
    assert point.expected_fpr <= fpr and point.normals_above == int(np.floor(fpr * 501)) - 1
    rates = [np.mean(held_out[:20_000] > fit_operating_point(rng.gamma(2.0, size=200), fpr).threshold)
             for _ in range(300)]
    expected = np.floor(fpr * 201 + 1e-9) / 201
    assert abs(np.mean(rates) - expected) < 4 * np.std(rates) / np.sqrt(len(rates)) + 1e-3


def test_calibration_file_records_model_options_and_normals(calibrated) -> None:
    root, path, _ = calibrated
    document = json.loads(path.read_text())
    assert document["normals"]["count"] == CALIBRATION_NORMALS == len(document["normals"]["studies"])
    assert all(len(study["sha256"]) == 64 for study in document["normals"]["studies"])
    assert len({study["sha256"] for study in document["normals"]["studies"]}) == CALIBRATION_NORMALS
    assert document["model"]["clip_weights"] == "random:tiny" and document["model"]["method"] == "ensemble"
    assert document["scoring"] == {"kind": "volume", "axis": None, "window": None, "aggregation": "max",
                                   "top_k": None, "volume_index": None}
    assert [p["name"] for p in document["operating_points"]] == list(FPRS)
    scores = np.sort(document["normals"]["scores"])
    assert document["operating_points"][0]["threshold"] == scores[-4]  # k = floor(0.1 * 40) = 4
    assert document["pixel_threshold"]["percentile"] == 99.9 and 0 < document["pixel_threshold"]["value"] <= 24


def test_infer_flags_held_out_normals_at_the_requested_rate(calibrated) -> None:
    root, calibration, held_out = calibrated
    out = root / "held_out_results"
    assert main(["infer", str(held_out), "--out", str(out), "--calibration", str(calibration),
                 "--operating-point", "25%", "--overlays", "0", *FAST]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == HELD_OUT_NORMALS
    assert all((out / row["path"] / "scores.json").is_file() and row["path"] == f"./{row['case']}" for row in rows)
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    flagged = sum(r["flagged"] == "yes" for r in rows)
    loaded = Calibration.load(calibration)
    point = loaded.operating_point("25%")
    # Held-out normals above the k-th highest of n calibration normals follow Beta-Binomial(m, k, n + 1 - k):
    # the count must lie in its central interval at the calibration's confidence.
    k = round(point.expected_fpr * (loaded.count + 1))
    predictive = stats.betabinom(HELD_OUT_NORMALS, k, loaded.count + 1 - k)
    tail = (1 - loaded.confidence) / 2
    assert predictive.ppf(tail) <= flagged <= predictive.ppf(1 - tail)
    scores = np.array([float(r["score"]) for r in rows])
    for other in loaded.operating_points:  # the other point, from the same run's scores
        k = round(other.expected_fpr * (loaded.count + 1))
        predictive = stats.betabinom(HELD_OUT_NORMALS, k, loaded.count + 1 - k)
        assert predictive.ppf(tail) <= np.sum(scores > other.threshold) <= predictive.ppf(1 - tail)
    document = json.loads((out / rows[0]["case"] / "scores.json").read_text())
    assert document["operating_point"] == "25%" and document["threshold"] == point.threshold
    assert document["flagged"] == (document["score"] > point.threshold)
    assert float(rows[0]["percentile"]) == pytest.approx(document["percentile"], abs=0.05)
    assert rows[0]["components"] == str(len(document["components"]))
    mask = nib.load(out / rows[0]["case"] / "lesion_mask.nii.gz")
    map_image = nib.load(out / rows[0]["case"] / "anomaly_map.nii.gz")
    np.testing.assert_array_equal(mask.affine, map_image.affine)
    np.testing.assert_array_equal(np.asarray(mask.dataobj) > 0,
                                  map_image.get_fdata() > document["calibration"]["pixel_threshold"])


def test_a_lesion_study_is_flagged_with_its_components(calibrated) -> None:
    root, calibration, _ = calibrated
    [study] = _studies(root / "lesion", 1, first_seed=2000, radius_mm=10.0)
    out = root / "lesion_results"
    assert main(["infer", str(study), "--out", str(out), "--calibration", str(calibration), *FAST]) == 0
    document = json.loads(next(out.glob("*/scores.json")).read_text())
    assert document["operating_point"] == "25%"  # the middle of two: the second
    assert 0 <= document["percentile"] <= 100
    volumes = [c["volume_ml"] for c in document["components"]]
    assert volumes == sorted(volumes, reverse=True)


def test_too_few_normals_are_refused_before_the_model_loads(calibrated, tmp_path, capsys, monkeypatch) -> None:
    root, _, held_out = calibrated
    monkeypatch.setattr("medclip_ad.inference.predictor.AnomalyPredictor", None)  # loading a model would fail
    code = main(["calibrate", *map(str, sorted(held_out.iterdir())[:5]), "--out", str(tmp_path / "c.json"), *FAST])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and error == ["medclip-ad: error: an FPR of 1% needs at least 99 normals, got 5; add normals or "
                                   "ask for a larger --fpr"]
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("change, message", [
    (["--aggregation", "mean"], "calibrated with aggregation 'max', this run uses 'mean'"),
    (["--image-size", "112"], "calibrated with image_size 224, this run uses 112"),
])
def test_another_model_or_option_is_refused(calibrated, tmp_path, capsys, change, message) -> None:
    root, calibration, held_out = calibrated
    arguments = [*FAST, *change]  # the later option wins
    code = main(["infer", str(sorted(held_out.iterdir())[0]), "--out", str(tmp_path / "out"),
                 "--calibration", str(calibration), *arguments])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and error[-1].startswith(f"medclip-ad: error: {calibration}: {message}")
    assert not (tmp_path / "out").exists()


def test_bad_calibration_requests_get_one_line(calibrated, tmp_path, capsys) -> None:
    root, calibration, held_out = calibrated
    study = str(sorted(held_out.iterdir())[0])
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "medclip-ad calibration", "version": 1}')
    cases = [(["--calibration", str(calibration), "--operating-point", "3%"],
              "not in the calibration (it has 10%, 25%)"),
             (["--calibration", str(broken)], f"{broken}: calibration file is incomplete or malformed"),
             (["--operating-point", "5%"], "--operating-point: needs --calibration")]
    for extra, message in cases:
        code = main(["infer", study, "--out", str(tmp_path / "out"), *extra, *FAST])
        error = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and message in error[-1], error


def test_a_manifest_s_normals_and_a_bad_normal(calibrated, tmp_path, capsys) -> None:
    root, _, held_out = calibrated
    data = tmp_path / "ct_study"
    (data / "normal").mkdir(parents=True)
    (data / "abnormal").mkdir()
    for path in sorted(held_out.iterdir())[:4]:
        shutil.copy(path, data / "normal" / path.name)
    shutil.copy(sorted(held_out.iterdir())[4], data / "abnormal" / "lesion.nii.gz")  # not a normal: left out
    prepare_dataset("volumes", [data]).save(tmp_path / "volumes.json")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not a volume")
    out = tmp_path / "calibration.json"
    code = main(["calibrate", str(broken), "--manifest", str(tmp_path / "volumes.json"), "--out", str(out),
                 "--fpr", "25%", *FAST])
    error = capsys.readouterr().err
    assert code == 1 and str(broken) in error and "Traceback" not in error
    document = json.loads(out.read_text())
    assert document["normals"]["count"] == 4
    assert sorted(Path(s["input"]).name for s in document["normals"]["studies"]) == sorted(
        p.name for p in (data / "normal").iterdir())


def test_a_volume_calibration_is_refused_for_an_image(calibrated, tmp_path, capsys) -> None:
    _, calibration, _ = calibrated
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    code = main(["infer", str(image), "--out", str(tmp_path / "out"), "--calibration", str(calibration), *FAST])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and f"medclip-ad: error: {image}: an image cannot use a calibration fitted on volumes" in error


def test_wilson_interval_matches_known_values() -> None:
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 0) is None


def test_evaluate_reports_rates_at_each_operating_point(calibrated, tmp_path) -> None:
    root, calibration, held_out = calibrated
    data = tmp_path / "ct_study"
    (data / "normal").mkdir(parents=True)
    for path in sorted(held_out.iterdir())[:6]:
        shutil.copy(path, data / "normal" / path.name)
    (data / "abnormal").mkdir()
    for path in _studies(tmp_path / "made", 4, first_seed=3000, radius_mm=10.0):
        shutil.copy(path, data / "abnormal" / path.name)
    manifest = prepare_dataset("volumes", [data])
    manifest.save(tmp_path / "volumes.json")
    out = tmp_path / "eval"
    assert main(["evaluate", "--manifest", str(tmp_path / "volumes.json"), "--out", str(out),
                 "--calibration", str(calibration), *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    [dataset] = results["datasets"].values()
    points = dataset["operating_points"]
    assert [p["operating_point"] for p in points] == list(FPRS)
    cases = list(csv.DictReader((out / "cases.csv").open()))
    for point in points:
        flagged = [float(c["score"]) > point["threshold"] for c in cases]
        labels = [c["label"] == "1" for c in cases]
        tp = sum(f and a for f, a in zip(flagged, labels))
        assert point["tp"] == tp and point["tp"] + point["fn"] == 4 and point["tn"] + point["fp"] == 6
        sensitivity = point["sensitivity"]
        assert sensitivity["value"] == tp / 4 and sensitivity["interval"] == list(wilson_interval(tp, 4))
    assert "At the calibration's operating points" in (out / "results.md").read_text()
