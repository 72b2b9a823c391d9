"""AnomalyCLIP training parity: one reference training step (`../shared/fixtures/train_step/`).

The fixture holds the reference's inputs, every loss term, every gradient and the parameters after one
Adam step, for layer 24 and for layers 6 12 18 24, and its test-time outputs with the checkpoints that
step produced. Tolerances are the fixture README's.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import DatasetWarning
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import SampleDataset, manifest_samples, read_display_image
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.preprocessing import as_rgb, preprocess, resize_rgb
from medclip_ad.methods.anomalyclip import training as anomalyclip_training
from medclip_ad.methods.anomalyclip.checkpoint import load_into_learner, load_prompt_checkpoint, new_prompt_learner
from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
from medclip_ad.methods.anomalyclip.training import TrainingConfig, train_prompts
from medclip_ad.modeling.anomaly_maps import layer_anomaly_maps
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.training.losses import dice_loss, focal_loss, glocal_loss
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
    assert np.abs(predictor.model.text_features().detach().numpy() - expected["text_features"][0]).max() <= 1e-5
    names = [str(name) for name in expected["images"]]
    images = [np.asarray(Image.open(FIXTURE / f"{name}.png").convert("RGB")) for name in names]
    batch = preprocess(images, 518)
    scores, maps = predictor.predict_tensor(batch)  # model-size maps, as test.py scores them
    with torch.no_grad():
        output = predictor.model(batch)
    raw = layer_anomaly_maps(output.probability_maps).sum(dim=1).numpy()
    for index, name in enumerate(names):
        assert abs(float(scores[index]) - float(expected[f"{name}/score"])) <= 1e-5, name
        assert np.abs(raw[index] - expected[f"{name}/raw_map"]).max() <= 2e-5, name
        assert np.abs(maps[index].numpy() - expected[f"{name}/map"]).max() <= 2e-5, name


def start_learner(text_encoder):
    """A prompt learner holding the fixture's starting prompts (the reference's own initialisation)."""
    checkpoint = load_prompt_checkpoint(FIXTURE / "start_prompts_reference_format.pth")
    learner = new_prompt_learner(text_encoder, like=checkpoint)
    load_into_learner(checkpoint, learner)
    return learner


def learned_tensors(learner) -> dict[str, torch.Tensor]:
    """The learner's tensors under the reference's names and shapes."""
    return {"ctx_pos": learner.ctx_normal, "ctx_neg": learner.ctx_abnormal,
            **{name: prompt for name, prompt in zip(DEEP, learner.deep_prompts)}}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_losses_and_gradients_of_the_step(setting, backbone):
    expected = np.load(FIXTURE / f"expected_step_{setting}.npz")
    text_encoder = TextEncoder(backbone.model)
    learner = start_learner(text_encoder)
    model = AnomalyCLIP(text_encoder, DPAMVisionEncoder(backbone.model, 518, SETTINGS[setting]), learner)
    batch = fixture_batch(expected["order"])
    output = model(batch["image"])
    parts = glocal_loss(output.image_logits, batch["label"], output.probability_maps, batch["mask"])
    values = {key: float(value.detach()) for key, value in parts.items()}
    assert abs(values["global"] - float(expected["global_loss"])) <= 1e-5
    assert abs(values["local"] - float(expected["local_sum"])) <= 2e-5
    assert abs(values["total"] - float(expected["total"])) <= 2e-5
    parts["total"].backward()
    for name, tensor in learned_tensors(learner).items():
        reference = expected[f"grad/{name}"].reshape(tensor.shape)
        relative = np.abs(tensor.grad.numpy() - reference).max() / np.abs(reference).max()
        assert relative <= (1e-3 if name in DEEP else 1e-5), name


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_one_training_step_through_train_prompts(setting, monkeypatch, tmp_path):
    """`train` for one step of the whole fixture batch, from the fixture's prompts: losses and Adam's result."""
    expected = np.load(FIXTURE / f"expected_step_{setting}.npz")
    monkeypatch.setattr(anomalyclip_training, "new_prompt_learner", lambda text_encoder: start_learner(text_encoder))
    detector = DetectorConfig(clip_weights=CLIP_WEIGHTS, layers=SETTINGS[setting], image_size=518, device="cpu")
    with pytest.warns(DatasetWarning, match="1 anomalous training image"):  # disc_lesion has no mask
        run = train_prompts(detector, [Manifest.load(FIXTURE / "batch" / "meta.json")], tmp_path,
                            TrainingConfig(epochs=1, batch_size=4), show_progress=False)
    with open(tmp_path / "train_log.csv") as handle:
        [row] = list(csv.DictReader(handle))
    assert abs(float(row["global_loss"]) - float(expected["global_loss"])) <= 1e-5
    assert abs(float(row["local_loss"]) - float(expected["local_sum"])) <= 2e-5
    assert abs(float(row["loss"]) - float(expected["total"])) <= 2e-5
    after = load_prompt_checkpoint(run.final_checkpoint).tensors
    ours = {"ctx_pos": after["ctx_normal"], "ctx_neg": after["ctx_abnormal"],
            **{name: after[f"deep_prompts.{index}"] for index, name in enumerate(DEEP)}}
    moved_differently = 0
    for name, tensor in ours.items():
        difference = np.abs(tensor.numpy() - expected[f"after/{name}"].reshape(tensor.shape))
        if name in DEEP:
            assert difference.max() <= 2e-3 + 1e-6, name  # an fp16-rounded tiny gradient of the other sign
            moved_differently += int((difference > 1e-6).sum())
        else:
            assert difference.max() <= 1e-6, name
    assert moved_differently <= 8
