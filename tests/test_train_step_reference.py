"""AnomalyCLIP training parity: one reference training step (`../shared/fixtures/train_step/`).

The fixture holds the reference's inputs, every loss term, every gradient and the parameters after one
Adam step, for layer 24 and for layers 6 12 18 24, and its test-time outputs with the checkpoints that
step produced. Tolerances are the fixture README's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import SampleDataset, manifest_samples, read_display_image
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.preprocessing import as_rgb, preprocess, resize_rgb
from medclip_ad.modeling.anomaly_maps import layer_anomaly_map
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.training.losses import dice_loss, focal_loss
from PIL import Image
from torch.utils.data import default_collate

from conftest import PARITY, SHARED

FIXTURE = SHARED / "fixtures" / "train_step"
CLIP_WEIGHTS = str(PARITY / "tiny_clip_openai_format.pt")
SETTINGS = {"L24": (24,), "L6_12_18_24": (6, 12, 18, 24)}
DEEP = [f"compound_prompts_text.{index}" for index in range(8)]


@pytest.fixture(scope="module")
def backbone():
    if not FIXTURE.is_dir():
        pytest.fail(f"train_step fixture missing at {FIXTURE}: set MEDCLIP_AD_SHARED to the shared/ folder")
    return load_clip(CLIP_WEIGHTS, "quick_gelu")


@pytest.fixture(scope="module")
def inputs():
    return np.load(FIXTURE / "expected_inputs.npz")


def fixture_batch(order: np.ndarray) -> dict[str, torch.Tensor]:
    """The fixture's batch through our data path, in the reference's row order."""
    samples = manifest_samples([Manifest.load(FIXTURE / "batch" / "meta.json")])
    dataset = SampleDataset(samples, 518)
    rows = {Path(sample.entry.img_path).name: index for index, sample in enumerate(samples)}
    return default_collate([dataset[rows[str(name)]] for name in order])


def test_images_and_masks_are_the_reference_inputs(inputs):
    expected = np.load(FIXTURE / "expected_step_L24.npz")
    for name in ("scan_640x480.png", "grey_300x360.png"):
        image = resize_rgb(as_rgb(read_display_image(FIXTURE / name)), 518)
        assert np.array_equal(image, inputs[f"resized_rgb/{name}"]), name
    batch = fixture_batch(expected["order"])
    assert np.array_equal(batch["mask"].numpy().astype(np.uint8), expected["gt"])  # 0 pixels differ


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_each_loss_term_per_layer_and_image(setting, backbone):
    """The loss modules on our forward pass of the fixture's starting prompts, term by term."""
    expected = np.load(FIXTURE / f"expected_step_{setting}.npz")
    predictor = AnomalyPredictor(DetectorConfig(clip_weights=CLIP_WEIGHTS, layers=SETTINGS[setting], image_size=518,
                                                prompts=str(FIXTURE / "start_prompts_reference_format.pth"),
                                                device="cpu"), backbone=backbone)
    batch = fixture_batch(expected["order"])
    with torch.no_grad():
        output = predictor.model(batch["image"])
    assert np.abs(output.image_logits.numpy() - expected["image_logits"]).max() <= 2e-5
    masks = batch["mask"]
    for layer, probabilities in enumerate(output.probability_maps):
        terms = {"focal": focal_loss(probabilities, masks), "dice_abnormal": dice_loss(probabilities[:, 1], masks),
                 "dice_normal": dice_loss(probabilities[:, 0], 1 - masks)}
        for name, value in terms.items():
            assert abs(float(value) - expected[name][layer]) <= 1e-5, (name, layer)
        for row in range(4):
            one = probabilities[row:row + 1], masks[row:row + 1]
            per_image = {"focal": focal_loss(*one), "dice_abnormal": dice_loss(one[0][:, 1], one[1]),
                         "dice_normal": dice_loss(one[0][:, 0], 1 - one[1])}
            for name, value in per_image.items():
                assert abs(float(value) - expected[f"{name}_per_image"][layer, row]) <= 1e-5, (name, layer, row)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_inference_with_the_after_step_checkpoint(setting, backbone):
    """test.py with the reference's after-step prompts, which are not fp16-exact: the rounding must match."""
    expected = np.load(FIXTURE / f"expected_infer_{setting}.npz")
    predictor = AnomalyPredictor(DetectorConfig(
        clip_weights=CLIP_WEIGHTS, layers=SETTINGS[setting], image_size=518, device="cpu",
        prompts=str(FIXTURE / f"after_step_{setting}_reference_format.pth")), backbone=backbone)
    assert np.abs(predictor.text_features.numpy() - expected["text_features"][0]).max() <= 1e-5
    names = [str(name) for name in expected["images"]]
    images = [np.asarray(Image.open(FIXTURE / f"{name}.png").convert("RGB")) for name in names]
    batch = preprocess(images, 518)
    scores, maps = predictor.predict_tensor(batch)  # model-size maps, as test.py scores them
    with torch.no_grad():
        output = predictor.model(batch, predictor.text_features)
    raw = torch.stack([layer_anomaly_map(p) for p in output.probability_maps]).sum(dim=0).numpy()
    for index, name in enumerate(names):
        assert abs(float(scores[index]) - float(expected[f"{name}/score"])) <= 1e-5, name
        assert np.abs(raw[index] - expected[f"{name}/raw_map"]).max() <= 2e-5, name
        assert np.abs(maps[index].numpy() - expected[f"{name}/map"]).max() <= 2e-5, name
