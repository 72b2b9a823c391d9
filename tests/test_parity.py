"""Reference parity: our model reproduces the public AnomalyCLIP reference on the shared fixture.

Tolerances are the fixture's own (README): scores and text 1e-4, maps 5e-4, fp32 on the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.preprocessing import preprocess
from medclip_ad.modeling.anomaly_maps import layer_anomaly_maps
from medclip_ad.modeling.clip_backbone import load_clip
from PIL import Image

from conftest import PARITY_IMAGES, PARITY_LAYER_SETTINGS

SCORE_TOL, MAP_TOL, TEXT_TOL = 1e-4, 5e-4, 1e-4


@pytest.fixture(scope="module")
def expected(parity_dir):
    return np.load(parity_dir / "expected.npz")


@pytest.fixture(scope="module")
def fixture_backbone(parity_dir):
    return load_clip(str(parity_dir / "tiny_clip_openai_format.pt"))


@pytest.fixture(scope="module")
def images(parity_dir):
    return [np.asarray(Image.open(parity_dir / f"{name}.png").convert("RGB")) for name in PARITY_IMAGES]


def _predictor(parity_dir, backbone, layers):
    config = DetectorConfig(clip_weights=str(parity_dir / "tiny_clip_openai_format.pt"),
                            prompts=str(parity_dir / "tiny_prompts_reference_format.pth"),
                            layers=layers, image_size=518, device="cpu", batch_size=3)
    return AnomalyPredictor(config, backbone=backbone)


def test_text_features_match_reference(parity_dir, fixture_backbone, expected):
    predictor = _predictor(parity_dir, fixture_backbone, (24,))
    difference = np.abs(predictor.model.text_features().detach().numpy() - expected["text_features"][0]).max()
    assert difference <= TEXT_TOL


@pytest.mark.parametrize("setting", sorted(PARITY_LAYER_SETTINGS))
def test_api_scores_and_maps_match_reference(setting, parity_dir, fixture_backbone, expected, images):
    predictor = _predictor(parity_dir, fixture_backbone, PARITY_LAYER_SETTINGS[setting])
    result = predictor.predict(images)
    assert np.abs(result.scores - expected[f"{setting}/scores"]).max() <= SCORE_TOL
    for index, name in enumerate(PARITY_IMAGES):
        assert result.maps[index].shape == (518, 518)
        assert np.abs(result.maps[index] - expected[f"{setting}/maps"][index]).max() <= MAP_TOL, name


@pytest.mark.parametrize("setting", sorted(PARITY_LAYER_SETTINGS))
def test_raw_maps_before_blur_match_reference(setting, parity_dir, fixture_backbone, expected, images):
    predictor = _predictor(parity_dir, fixture_backbone, PARITY_LAYER_SETTINGS[setting])
    with torch.no_grad():
        output = predictor.model(preprocess(images, 518))
    raw = layer_anomaly_maps(output.probability_maps).sum(dim=1).numpy()
    for index, name in enumerate(PARITY_IMAGES):
        assert np.abs(raw[index] - expected[f"{setting}/{name}/raw_map"]).max() <= MAP_TOL, name


def test_layer_maps_sum_to_final_map(parity_dir, fixture_backbone, images, expected):
    predictor = _predictor(parity_dir, fixture_backbone, PARITY_LAYER_SETTINGS["L6_12_18_24"])
    result = predictor.predict(images[:1], with_layers=True)
    assert result.layer_maps[0].shape == (4, 518, 518)
    assert np.abs(result.layer_maps[0].sum(axis=0) - expected["L6_12_18_24/maps"][0]).max() <= MAP_TOL


@pytest.mark.parametrize("setting", sorted(PARITY_LAYER_SETTINGS))
def test_cli_reproduces_reference(setting, parity_dir, expected, tmp_path):
    layers = [str(layer) for layer in PARITY_LAYER_SETTINGS[setting]]
    out = tmp_path / "out"
    code = main(["infer", *[str(parity_dir / f"{name}.png") for name in PARITY_IMAGES], "--out", str(out),
                 "--clip-weights", str(parity_dir / "tiny_clip_openai_format.pt"),
                 "--prompts", str(parity_dir / "tiny_prompts_reference_format.pth"),
                 "--layers", *layers, "--image-size", "518", "--device", "cpu"])
    assert code == 0
    for index, name in enumerate(PARITY_IMAGES):
        case = out / name
        scores = json.loads((case / "scores.json").read_text())
        anomaly_map = np.load(case / "anomaly_map.npy")
        assert anomaly_map.dtype == np.float32 and anomaly_map.shape == (518, 518)
        assert abs(scores["score"] - expected[f"{setting}/scores"][index]) <= SCORE_TOL
        assert np.abs(anomaly_map - expected[f"{setting}/maps"][index]).max() <= MAP_TOL
        assert scores["model"]["layers"] == [int(layer) for layer in layers]
        assert scores["model"]["random_weights"] is False
        assert len(scores["model"]["prompts_sha256"]) == 64
