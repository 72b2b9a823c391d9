"""Metrics: the reference evaluation values on the shared fixture, and small cases checked by hand."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from medclip_ad.evaluation.metrics import aupro, f1_max, image_ap, image_auroc, pixel_ap, pixel_auroc, pixel_f1_max

from conftest import REPO_ROOT, SHARED

FIXTURE = SHARED / "fixtures" / "metrics" / "metric_case.npz"


def _load_loop_port():
    """The one copy of the slow reference loop lives in benchmarks/, which is not a package on sys.path."""
    path = REPO_ROOT / "benchmarks" / "reference_aupro_loop.py"
    spec = importlib.util.spec_from_file_location("reference_aupro_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_aupro_loop


@pytest.fixture(scope="module")
def case():
    if not FIXTURE.is_file():
        pytest.fail(f"metric fixture missing at {FIXTURE}: set MEDCLIP_AD_SHARED to the shared/ folder")
    return np.load(FIXTURE)


def test_fixture_image_metrics(case):
    assert image_auroc(case["labels"], case["scores"]) == pytest.approx(float(case["image_auroc"]), abs=1e-6)
    assert image_ap(case["labels"], case["scores"]) == pytest.approx(float(case["image_ap"]), abs=1e-6)


def test_fixture_pixel_metrics(case):
    assert pixel_auroc(case["masks"], case["maps"]) == pytest.approx(float(case["pixel_auroc"]), abs=1e-6)
    expected = float(case["pixel_aupro_reference"])
    assert aupro(case["masks"], case["maps"], flavour="reference") == pytest.approx(expected, abs=1e-6)
    # A list of 2-D arrays gives the same answer as the stacked array.
    assert aupro(list(case["masks"]), list(case["maps"])) == pytest.approx(expected, abs=1e-6)


def test_vectorised_reference_aupro_matches_loop_port():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 24, 24), np.uint8)
    masks[0, 3:8, 3:9] = 1
    masks[0, 15:20, 12:14] = 1  # two regions in one image
    masks[1, 10:18, 5:15] = 1
    masks[2, 8:9, 8:9] = 1  # a one-pixel region; image 3 stays normal
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    expected = _load_loop_port()(masks, maps)
    assert aupro(masks, maps, flavour="reference") == pytest.approx(expected, abs=1e-12)


def test_perfect_map_scores_one():
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 2:6, 2:6] = 1
    masks[1, 9:14, 4:12] = 1
    # Normal pixels spread over [0, 0.5), anomalous over [0.5, 1]: every threshold separates them.
    maps = np.where(masks > 0, 0.5, 0.0) + np.linspace(0, 0.49, masks.size).reshape(masks.shape)
    assert aupro(masks, maps, flavour="reference") == pytest.approx(1.0, abs=1e-12)
    assert aupro(masks, maps, flavour="standard") == pytest.approx(1.0, abs=1e-12)
    assert pixel_auroc(masks, maps) == 1.0
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0


def test_binary_perfect_map():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 2:5, 2:5] = 1
    maps = masks.astype(np.float32)
    assert aupro(masks, maps, flavour="standard") == pytest.approx(1.0, abs=1e-12)
    # Every reference threshold has FPR 0, so its FPR rescaling is 0 / 0: undefined, not a number.
    assert aupro(masks, maps, flavour="reference") is None


def test_single_class_is_undefined():
    assert image_auroc([0, 0, 0], [0.1, 0.5, 0.9]) is None
    assert image_ap([0, 0, 0], [0.1, 0.5, 0.9]) is None
    assert f1_max([1, 1], [0.1, 0.5]) is None
    normal = np.zeros((2, 8, 8), np.uint8)
    maps = np.random.default_rng(1).random(normal.shape)
    assert pixel_auroc(normal, maps) is None
    assert pixel_ap(normal, maps) is None
    assert pixel_f1_max(normal, maps) is None
    assert aupro(normal, maps, flavour="reference") is None
    assert aupro(normal, maps, flavour="standard") is None


def test_standard_aupro_by_hand():
    # One 1x10 image: a two-pixel region and eight normal pixels, all scores distinct.
    masks = np.array([[[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]]], np.uint8)
    maps = np.array([[[0.9, 0.5, 0.8, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01]]])
    # Lowering the threshold: (FPR, PRO) = (0, 0) -> 0.9 (0, 1/2) -> 0.8 (1/8, 1/2) -> 0.5 (1/8, 1)
    # -> 0.4 (2/8, 1) -> 0.3 (3/8, 1) ...; PRO at FPR 0.3 is 1.
    # Area on [0, 0.3] = 0.125 * 0.5 + (0.3 - 0.125) * 1 = 0.2375; / 0.3 = 0.791666...
    assert aupro(masks, maps, flavour="standard") == pytest.approx(0.2375 / 0.3, abs=1e-12)


def test_standard_aupro_interpolates_at_max_fpr():
    # A tie between a region pixel and two of the three normals makes a sloped segment across FPR 0.3.
    masks = np.array([[[1, 1, 0, 0, 0]]], np.uint8)
    maps = np.array([[[0.9, 0.6, 0.6, 0.6, 0.2]]])
    # Curve: (0, 0) -> 0.9 (0, 1/2) -> 0.6 (2/3, 1) -> 0.2 (1, 1). At FPR 0.3 the PRO is
    # 1/2 + (1/2) * 0.3 / (2/3) = 0.725; area = 0.3 * (0.5 + 0.725) / 2 = 0.18375; / 0.3 = 0.6125.
    assert aupro(masks, maps, flavour="standard") == pytest.approx(0.6125, abs=1e-12)


def test_f1_max_by_hand():
    # Thresholds 0.8: P 1, R 1/2, F1 2/3; 0.4: P 1/2, R 1/2, F1 1/2; 0.35: P 2/3, R 1, F1 0.8;
    # 0.1: P 1/2, R 1, F1 2/3. The maximum is 0.8.
    assert f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8, abs=1e-12)
    masks = np.array([[[0, 0], [1, 1]]], np.uint8)
    assert pixel_f1_max(masks, np.array([[[0.1, 0.4], [0.35, 0.8]]])) == pytest.approx(0.8, abs=1e-12)


def test_unknown_flavour_is_rejected():
    with pytest.raises(ValueError, match="flavour"):
        aupro(np.ones((1, 2, 2)), np.ones((1, 2, 2)), flavour="mvtec")
