"""AdaCLIP reference parity: the reference's checkpoint format loads, and our AdaCLIP reproduces the
public reference on the shared fixture (`../shared/fixtures/adaclip/`, tolerances from its README).

Everything runs at the fixture's settings: 518 px, CPU fp32, feature layers 6 12 18 24, the
reference-format checkpoint read directly or imported through the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.preprocessing import as_rgb, preprocess, resize_rgb
from medclip_ad.methods.adaclip.detector import LOGIT_SCALE
from medclip_ad.methods.adaclip.semantic_fusion import (
    CENTRE_WEIGHT,
    CLUSTERS,
    KMEANS_SEED,
    TOP_PATCHES,
    kmeans_labels,
    mean_of_cluster_means,
)
from medclip_ad.methods.checkpoint import load_method_checkpoint
from PIL import Image

from conftest import SHARED

FIXTURE = SHARED / "fixtures" / "adaclip"
IMAGES = ("disc_lesion", "scan_640x480", "grey_300x360")
UNSEEDED_SPREAD = {"disc_lesion": 5.7e-4, "scan_640x480": 2.5e-3, "grey_300x360": 7.3e-4}
CLIP_WEIGHTS = str(FIXTURE / "tiny_clip_adaclip_visible.pt")
REFERENCE_CHECKPOINT = FIXTURE / "adaclip_reference_checkpoint.pth"


@pytest.fixture(scope="module")
def expected():
    if not FIXTURE.is_dir():
        pytest.fail(f"adaclip fixture missing at {FIXTURE}: set MEDCLIP_AD_SHARED to the shared/ folder")
    return np.load(FIXTURE / "expected.npz")


@pytest.fixture(scope="module")
def images():
    return [np.asarray(Image.open(FIXTURE / f"{name}.png")) for name in IMAGES]


@pytest.fixture(scope="module")
def predictor():
    """The reference checkpoint read directly, with the method told by its keys (no --method)."""
    config = DetectorConfig(clip_weights=CLIP_WEIGHTS, prompts=str(REFERENCE_CHECKPOINT), method="adaclip",
                            image_size=518, device="cpu", batch_size=3)
    return AnomalyPredictor(config)


@pytest.fixture(scope="module")
def ours(predictor, images):
    """Every intermediate the fixture records, computed with the detector's own modules, per image."""
    model = predictor.model
    batch = preprocess(images, 518)
    with torch.no_grad():
        frozen = model.vision_encoder(batch).image_embedding
        features = model.features(batch)
        scores, maps = predictor.predict_tensor(batch)
        raw_maps = model(batch).probability_maps[0]
        dyn_text = torch.stack([generator(frozen) for generator in model.weights.text_prompter.generators], dim=1)
        dyn_visual = torch.stack([generator(frozen) for generator in model.weights.visual_prompter.generators], dim=1)
    return {"frozen": frozen, "text": features.text, "global": features.global_embedding,
            "image_features_raw": features.image_embedding, "dyn_text": dyn_text, "dyn_visual": dyn_visual,
            "patches": features.patches, "logits": features.layer_logits, "scores": scores, "maps": maps,
            "raw_maps": (raw_maps[:, 1] + 1 - raw_maps[:, 0]) / 2}


def test_reference_preprocessing_is_reproduced(images, expected):
    for name, image in zip(IMAGES, images):
        if f"{name}/resized_rgb" in expected:
            assert np.array_equal(resize_rgb(as_rgb(image), 518), expected[f"{name}/resized_rgb"]), name


def test_frozen_embedding_and_dynamic_tokens_match(ours, expected):
    for index, name in enumerate(IMAGES):
        for key in ("frozen", "dyn_visual", "dyn_text"):
            assert np.abs(ours[key][index].numpy() - expected[f"{name}/{key}"][0]).max() <= 1e-4, (name, key)


def test_text_features_match(ours, expected):
    for index, name in enumerate(IMAGES):
        # ours (2, D) per image; the reference's (D, 2), columns [normal, abnormal]
        assert np.abs(ours["text"][index].numpy().T - expected[f"{name}/text"][0]).max() <= 1e-5, name


def test_visual_features_and_layer_logits_match(ours, expected):
    for index, name in enumerate(IMAGES):
        for key in ("global", "image_features_raw"):
            assert np.abs(ours[key][index].numpy() - expected[f"{name}/{key}"][0]).max() <= 1e-5, (name, key)
        assert np.abs(ours["patches"][-1][index].numpy() - expected[f"{name}/patches_L24"][0]).max() <= 1e-5
        for layer, logits in zip((6, 12, 18, 24), ours["logits"]):
            difference = np.abs(logits[index].numpy() - expected[f"{name}/layer_logits_L{layer}"][0]).max()
            assert difference <= 1e-3, (name, layer)


def test_maps_match(ours, expected):
    for index, name in enumerate(IMAGES):
        assert np.abs(ours["raw_maps"][index].numpy() - expected[f"{name}/raw_map"]).max() <= 2e-5, name
        assert np.abs(ours["maps"][index].numpy() - expected[f"{name}/map"]).max() <= 2e-5, name


def test_score_without_fusion_matches(ours, expected):
    for index, name in enumerate(IMAGES):
        logits = LOGIT_SCALE * ours["global"][index] @ ours["text"][index].T
        assert abs(float(logits.softmax(dim=-1)[1]) - float(expected[f"{name}/score_no_hsf"])) <= 1e-5, name


def test_fusion_arithmetic_on_the_reference_points_and_labels(expected):
    for name in IMAGES:
        points = torch.from_numpy(expected[f"{name}/km_X"]).reshape(1, TOP_PATCHES, 4, -1).mean(dim=2)
        labels = torch.from_numpy(expected[f"{name}/labels"]).long()[None]
        centre = F.normalize(mean_of_cluster_means(points, labels, CLUSTERS), dim=-1)
        glob = torch.from_numpy(expected[f"{name}/global"])
        fused = F.normalize(CENTRE_WEIGHT * centre + (1 - CENTRE_WEIGHT) * glob, dim=-1)
        text = torch.from_numpy(expected[f"{name}/text"][0])
        score = (LOGIT_SCALE * fused @ text).softmax(dim=-1)[0, 1]
        assert abs(float(score) - float(expected[f"{name}/score_hsf_seed0"])) <= 1e-6, name


@pytest.mark.parametrize("seed, labels_key", [(KMEANS_SEED, "labels_cli"), (0, "labels")])
def test_kmeans_partitions_the_reference_points_as_the_reference(expected, seed, labels_key):
    points = torch.stack([torch.from_numpy(expected[f"{name}/km_X"]) for name in IMAGES]).double()
    labels = kmeans_labels(points, CLUSTERS, seed=seed)  # all three images in one batch
    for index, name in enumerate(IMAGES):
        assert np.array_equal(labels[index].numpy(), expected[f"{name}/{labels_key}"]), name


def test_fused_score_matches_a_fresh_reference_run(ours, expected):
    for index, name in enumerate(IMAGES):
        score = float(ours["scores"][index])
        # Our KMeans is seeded as the reference's test.py: the same partition, so the tight bound holds.
        assert abs(score - float(expected[f"{name}/score_hsf_cli"])) <= 1e-5, name
        spread = max(1e-4, UNSEEDED_SPREAD[name])
        assert np.abs(score - expected[f"{name}/scores_hsf_unseeded"]).min() <= spread, name


def test_fused_points_are_the_reference_top_patches(ours, expected):
    patches = ours["patches"]
    top = torch.stack(ours["logits"]).mean(0).softmax(dim=-1)[..., 1].topk(TOP_PATCHES, dim=1).indices
    for index, name in enumerate(IMAGES):
        assert np.array_equal(top[index].numpy(), expected[f"{name}/topk_indices"]), name
        points = torch.cat([p[index, top[index]] for p in patches], dim=-1).numpy()
        assert np.abs(points - expected[f"{name}/km_X"]).max() <= 1e-5, name


def test_import_checkpoint_detects_adaclip_and_infers_the_same(tmp_path, expected, capsys):
    out = tmp_path / "adaclip.safetensors"
    assert main(["import-checkpoint", str(REFERENCE_CHECKPOINT), "--out", str(out), "--training-data", "fixture"]) == 0
    assert "adaclip" in capsys.readouterr().out
    checkpoint = load_method_checkpoint(out, "adaclip")
    assert checkpoint.metadata["activation"] == "gelu" and checkpoint.metadata["feature_layers"] == [6, 12, 18, 24]
    reference = torch.load(REFERENCE_CHECKPOINT, weights_only=True)
    assert torch.equal(checkpoint.tensors["text_prompter.static"][2],
                       reference["clip_model.text_prompter.static_prompts.2"])
    assert torch.equal(checkpoint.tensors["visual_prompter.generators.4.weight"],
                       reference["clip_model.dynamic_visual_prompt_generator.head.4.weight"])
    assert torch.equal(checkpoint.tensors["global_projection.bias"],
                       reference["clip_model.cls_token_layer.head.0.bias"])
    results = tmp_path / "results"
    # --method is left out: the checkpoint records it, and with it the activation
    assert main(["infer", str(FIXTURE / "disc_lesion.png"), "--out", str(results), "--prompts", str(out),
                 "--clip-weights", CLIP_WEIGHTS, "--image-size", "518", "--device", "cpu"]) == 0
    document = json.loads((results / "disc_lesion" / "scores.json").read_text())
    assert document["model"]["method"] == "adaclip" and document["model"]["activation"] == "gelu"
    assert abs(document["score"] - float(expected["disc_lesion/score_hsf_cli"])) <= 1e-5
    anomaly_map = np.load(results / "disc_lesion" / "anomaly_map.npy")
    assert np.abs(anomaly_map - expected["disc_lesion/map"]).max() <= 2e-5


def test_reference_file_infers_directly_with_the_method_told_by_its_keys(tmp_path, expected):
    results = tmp_path / "results"
    assert main(["infer", str(FIXTURE / "scan_640x480.png"), "--out", str(results),
                 "--prompts", str(REFERENCE_CHECKPOINT), "--clip-weights", CLIP_WEIGHTS,
                 "--image-size", "518", "--device", "cpu"]) == 0
    document = json.loads((results / "scan_640x480" / "scores.json").read_text())
    assert document["model"]["method"] == "adaclip" and document["model"]["layers"] == [6, 12, 18, 24]
    assert abs(document["score"] - float(expected["scan_640x480/score_hsf_cli"])) <= 1e-5


def test_a_contradicting_activation_and_a_wrong_method_are_refused(tmp_path, capsys):
    imported = tmp_path / "adaclip.safetensors"
    assert main(["import-checkpoint", str(REFERENCE_CHECKPOINT), "--out", str(imported)]) == 0
    code = main(["infer", str(FIXTURE / "disc_lesion.png"), "--out", str(tmp_path / "a"), "--prompts", str(imported),
                 "--activation", "quick_gelu", "--clip-weights", CLIP_WEIGHTS, "--device", "cpu"])
    assert code == 2 and "was trained with gelu" in capsys.readouterr().err
    with pytest.raises(UserInputError, match="a reference adaclip checkpoint: pass --method adaclip"):
        AnomalyPredictor(DetectorConfig(clip_weights=CLIP_WEIGHTS, prompts=str(REFERENCE_CHECKPOINT),
                                        method="anomalyclip", device="cpu"))
    code = main(["import-checkpoint", str(REFERENCE_CHECKPOINT), "--out", str(tmp_path / "b.safetensors"),
                 "--layers", "12", "24"])
    assert code == 2 and "4 patch projections" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (lambda state: state.update({"clip_model.unknown.weight": torch.zeros(1)}), "unexpected entry"),
    (lambda state: state.pop("clip_model.text_prompter.static_prompts.1"), "prompts of layers [0, 2, 3]"),
])
def test_damaged_reference_files_get_one_clear_line(tmp_path, change, message):
    state = torch.load(REFERENCE_CHECKPOINT, weights_only=True)
    change(state)
    path = tmp_path / "damaged.pth"
    torch.save(state, path)
    with pytest.raises(UserInputError) as error:
        AnomalyPredictor(DetectorConfig(clip_weights=CLIP_WEIGHTS, prompts=str(path), method="adaclip", device="cpu"))
    assert str(path) in str(error.value) and message in str(error.value)
