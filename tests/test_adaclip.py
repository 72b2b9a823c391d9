"""AdaCLIP: output shapes, batch independence, training, checkpoints, the infer contract, seeded fusion.

A tiny random CLIP at 224 px keeps these fast; they check the mechanics, not detection quality.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import prepare_dataset
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.methods.adaclip.checkpoint import load_adaclip, save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import ADACLIP_LAYERS, AdaCLIP
from medclip_ad.methods.adaclip.recipe import AdaCLIPTrainingConfig
from medclip_ad.methods.adaclip.semantic_fusion import (
    KMEANS_SEED,
    fused_embedding,
    kmeans_labels,
    mean_of_cluster_means,
)
from medclip_ad.methods.adaclip.text import adaclip_sentences
from medclip_ad.methods.adaclip.training import train_adaclip
from medclip_ad.methods.checkpoint import load_method_checkpoint
from medclip_ad.modeling.text_encoder import TextEncoder
from PIL import Image
from sklearn.cluster import KMeans

from mini_datasets import make_endo

SIZE = 224
BACKBONE = ["--clip-weights", "random:tiny", "--image-size", str(SIZE), "--device", "cpu"]


@pytest.fixture(scope="module")
def model(tiny_backbone):
    torch.manual_seed(0)
    return AdaCLIP(TextEncoder(tiny_backbone.model), tiny_backbone.model, SIZE).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def batched(model, images):
    with torch.no_grad():
        return model(images)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of `medclip-ad train --method adaclip` on tiny generated data: its folder."""
    root = tmp_path_factory.mktemp("adaclip")
    manifest = prepare_dataset("endo", [make_endo(root / "endo", normal=1, anomalous=2)])
    manifest.save(root / "endo.json")
    assert main(["train", "--method", "adaclip", "--manifest", str(root / "endo.json"), "--out", str(root / "run"),
                 "--epochs", "2", "--batch-size", "3", "--lr", "0.001", *BACKBONE]) == 0
    return root / "run"


def test_every_output_has_its_shape(model, images, batched, tiny_backbone):
    embed_dim = tiny_backbone.model.visual.proj.shape[1]
    with torch.no_grad():
        text_prompts, visual_prompts = model.hybrid_prompts(images[:1])
        text = model.text_encoder(text_prompts)
        visual = model.vision_encoder(images[:1], visual_prompts)
        model.train()
        try:
            training_output = model(images[:2])
        finally:
            model.eval()
    assert text_prompts.shape == (1, 4, 5, tiny_backbone.model.token_embedding.weight.shape[1])
    assert text_prompts.dtype == torch.float16
    assert visual_prompts.shape == (1, 4, 5, tiny_backbone.model.visual.conv1.out_channels)
    assert text.shape == (1, 2, embed_dim) and torch.allclose(text.norm(dim=-1), torch.ones(1, 2), atol=1e-5)
    assert len(adaclip_sentences()[0]) == 28 and len(adaclip_sentences()[1]) == 20
    assert [tuple(t.shape) for t in visual.patch_tokens] == [(1, (SIZE // 14) ** 2, 128)] * 4
    assert batched.image_logits.shape == (3, 2) and len(batched.probability_maps) == 1
    assert batched.probability_maps[0].shape == (3, 2, SIZE, SIZE) and batched.map_range == 1.0
    assert torch.allclose(batched.probability_maps[0].sum(dim=1), torch.ones(3, SIZE, SIZE), atol=1e-5)
    assert training_output.image_logits.shape == (2, 2) and len(training_output.layer_probability_maps) == 4
    assert all(m.shape == (2, 2, SIZE, SIZE) for m in training_output.layer_probability_maps)
    assert model.layers == ADACLIP_LAYERS and model.map_range == 1.0


def test_training_scores_the_fused_feature_as_inference_does(model, images, batched):
    model.train()
    try:
        with torch.no_grad():
            training_output = model(images)
    finally:
        model.eval()
    # The image loss sees the same hybrid semantic fusion as the test score, not the global embedding alone.
    assert torch.allclose(training_output.image_logits, batched.image_logits, atol=1e-4)
    with torch.no_grad():
        features = model.features(images)
    global_only = 100 * torch.einsum("bd,bkd->bk", features.global_embedding, features.text)
    assert not torch.allclose(training_output.image_logits, global_only, atol=1e-2)


def test_a_batch_of_three_equals_three_batches_of_one(model, images, batched):
    with torch.no_grad():
        singles = [model(images[index:index + 1]) for index in range(3)]
    # The hybrid prompts are rounded to fp16 as the reference injects them: a last-bit difference between
    # batched and single matmuls can move one token by an fp16 step, so outputs agree to ~2e-5, not 1e-6.
    scores = batched.image_logits.softmax(dim=-1)[:, 1]
    single_scores = torch.cat([s.image_logits.softmax(dim=-1)[:, 1] for s in singles])
    assert torch.allclose(scores, single_scores, atol=1e-4)
    single_maps = torch.cat([s.probability_maps[0] for s in singles])
    assert torch.allclose(batched.probability_maps[0], single_maps, atol=1e-4)


def test_semantic_fusion_is_deterministic_and_per_image():
    generator = torch.Generator().manual_seed(2)
    tokens = [F.normalize(torch.randn(3, 256, 96, generator=generator), dim=-1) for _ in range(4)]
    probability, centre = torch.rand(3, 256, generator=generator), F.normalize(torch.randn(3, 96, generator=generator))
    fused = fused_embedding(tokens, probability, centre)
    assert torch.equal(fused, fused_embedding(tokens, probability, centre))
    alone = fused_embedding([t[1:2] for t in tokens], probability[1:2], centre[1:2])
    assert torch.allclose(fused[1:2], alone, atol=1e-6) and torch.allclose(fused.norm(dim=-1), torch.ones(3))


@pytest.mark.parametrize("seed", [KMEANS_SEED, 0, 7])
def test_kmeans_gives_scikit_learns_labels_for_the_same_seed(seed):
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(20, 256, generator=generator), dim=-1)
    blobs = F.normalize(centres.repeat_interleave(5, 0) + 0.3 * torch.randn(100, 256, generator=generator), dim=-1)
    scattered = F.normalize(torch.randn(3, 100, 256, generator=generator), dim=-1)
    sets = torch.cat([blobs[torch.randperm(100, generator=generator)][None], scattered]).float()
    ours = kmeans_labels(sets.double(), 20, seed=seed)  # one batch of four sets
    for points, labels in zip(sets, ours):
        theirs = KMeans(n_clusters=20, n_init="auto", random_state=seed).fit(points.numpy()).labels_
        assert np.array_equal(labels.numpy(), theirs)  # the same partition, numbered alike


def test_empty_clusters_are_left_out_of_the_centre():
    points = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    labels = kmeans_labels(points, 3)  # two distinct points: the third centre stays empty
    assert len(labels.unique()) == 2
    assert torch.allclose(mean_of_cluster_means(points, labels, 3), torch.tensor([[0.5, 0.5]]))


def test_training_lowers_the_loss_and_records_provenance(trained):
    metadata = load_method_checkpoint(trained / "adaclip.safetensors", "adaclip").metadata
    assert metadata["epoch_losses"][1] < metadata["epoch_losses"][0]
    assert metadata["feature_layers"] == list(ADACLIP_LAYERS) and metadata["object_word"] == "object"
    assert metadata["recipe"]["learning_rate"] == 0.001 and metadata["recipe"]["betas"] == [0.5, 0.999]
    assert metadata["recipe"]["weight_decay"] == 0.01 and metadata["seed"] == 111
    assert metadata["training_data"] == {"endo": 3} and metadata["clip_weights"] == "random:tiny"
    with open(trained / "train_log.csv") as handle:
        assert len(handle.readlines()) == 1 + 2


def test_mosaic_tiles_the_datasets_the_reference_tiles(tmp_path):
    manifest = prepare_dataset("endo", [make_endo(tmp_path / "endo", normal=2, anomalous=2)])
    manifest.dataset = "mvtec"  # the reference tiles MVTec AD images (all four share one class here)
    config = AdaCLIPTrainingConfig(epochs=1, batch_size=4, mosaic_probability=1.0)
    run = train_adaclip(DetectorConfig(clip_weights="random:tiny", image_size=SIZE, device="cpu"), [manifest],
                        tmp_path / "run", config, show_progress=False)
    metadata = load_method_checkpoint(run.final_checkpoint, "adaclip").metadata
    assert np.isfinite(run.epoch_losses[0]) and metadata["recipe"]["mosaic_probability"] == 1.0


def test_a_resumed_run_ends_where_a_straight_run_ends(trained, tmp_path):
    assert sorted(path.name for path in trained.glob("epoch_*.safetensors")) == ["epoch_001.safetensors",
                                                                                "epoch_002.safetensors"]
    resumed = tmp_path / "resumed"
    assert main(["train", "--method", "adaclip", "--manifest", str(trained.parent / "endo.json"), "--out", str(resumed),
                 "--epochs", "2", "--batch-size", "3", "--lr", "0.001",
                 "--resume", str(trained / "epoch_001.safetensors"),
                 *BACKBONE]) == 0
    straight = load_method_checkpoint(trained / "adaclip.safetensors", "adaclip")
    continued = load_method_checkpoint(resumed / "adaclip.safetensors", "adaclip")
    assert continued.metadata["epoch"] == 2 and continued.optimizer_state
    assert continued.metadata["epoch_losses"] == pytest.approx(straight.metadata["epoch_losses"], abs=1e-5)
    for name, value in straight.tensors.items():
        assert torch.allclose(continued.tensors[name], value, atol=1e-6), name
    with open(resumed / "train_log.csv") as handle:
        assert [row.split(",")[0] for row in handle.read().splitlines()] == ["epoch", "2"]


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "2", "--resume", "RUN/epoch_002.safetensors"], "already trained 2 epochs of 2"),
    (["--epochs", "3", "--resume", "RUN/epoch_001.safetensors", "--object-word", "brain"],
     "trained with object word object, but this run asks for brain"),
    (["--epochs", "3", "--resume", "RUN/epoch_001.safetensors", "--layers", "12", "24"],
     "trained with feature layers [6, 12, 18, 24], but this run asks for [12, 24]"),
    (["--local-weight", "2"], "--local-weight: not used by --method adaclip"),
])
def test_bad_training_requests_get_one_clear_line(trained, tmp_path, capsys, extra, message):
    extra = [value.replace("RUN", str(trained)) for value in extra]
    code = main(["train", "--method", "adaclip", "--manifest", str(trained.parent / "endo.json"),
                 "--out", str(tmp_path / "run"), *extra, *BACKBONE])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in error[-1]
    assert not (tmp_path / "run" / "adaclip.safetensors").exists()


def test_layers_are_refused_at_inference(trained, tmp_path, capsys):
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "scan.png")
    code = main(["infer", str(tmp_path / "scan.png"), "--out", str(tmp_path / "out"), "--method", "adaclip",
                 "--layers", "24",
                 "--prompts", str(trained / "adaclip.safetensors"), *BACKBONE])
    assert code == 2 and "--layers: not used by --method adaclip" in capsys.readouterr().err


def test_chosen_feature_layers_are_trained_and_recorded(trained, tmp_path):
    out = tmp_path / "two_layers"
    assert main(["train", "--method", "adaclip", "--manifest", str(trained.parent / "endo.json"), "--out", str(out),
                 "--epochs", "1", "--layers", "12", "24", *BACKBONE]) == 0
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="adaclip",
                                                prompts=str(out / "adaclip.safetensors"), image_size=SIZE,
                                                device="cpu"))
    assert predictor.model.layers == (12, 24) and len(predictor.model.weights.patch_projections) == 2
    scores, maps = predictor.predict_tensor(torch.zeros(2, 3, SIZE, SIZE))
    assert scores.shape == (2,) and maps.shape == (2, SIZE, SIZE)


def test_checkpoint_round_trip_gives_identical_outputs(model, images, tiny_backbone, tmp_path):
    with torch.no_grad():
        for parameter in model.weights.parameters():
            parameter.add_(0.01)  # not the initial values: the weights must really be loaded
    path = tmp_path / "adaclip.safetensors"
    save_adaclip_checkpoint(path, model, {"note": "test"})
    loaded, checkpoint = load_adaclip(path, tiny_backbone, TextEncoder(tiny_backbone.model), SIZE)
    loaded.eval()
    assert checkpoint.metadata["method"] == "adaclip"
    with torch.no_grad():
        before, after = model(images[:1]), loaded(images[:1])
    assert torch.equal(before.image_logits, after.image_logits)
    assert torch.equal(before.probability_maps[0], after.probability_maps[0])
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="adaclip", prompts=str(path),
                                                image_size=SIZE, device="cpu"), backbone=tiny_backbone)
    scores, maps = predictor.predict_tensor(images[:1])
    assert torch.allclose(scores, before.image_logits.softmax(dim=-1)[:, 1], atol=1e-6)
    assert maps.shape == (1, SIZE, SIZE) and predictor.map_range == 1.0
    with pytest.raises(UserInputError, match="method adaclip"):
        AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", prompts=str(path), image_size=SIZE, device="cpu"),
                         backbone=tiny_backbone)


def test_infer_command_follows_the_output_contract(trained, tmp_path):
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["infer", str(image), "--out", str(out), "--method", "adaclip",
                 "--prompts", str(trained / "adaclip.safetensors"), *BACKBONE]) == 0
    document = json.loads((out / "scan" / "scores.json").read_text())
    anomaly_map = np.load(out / "scan" / "anomaly_map.npy")
    assert anomaly_map.dtype == np.float32 and anomaly_map.shape == (60, 90)
    assert 0.0 <= anomaly_map.min() and anomaly_map.max() <= 1.0 and document["map_range"] == [0.0, 1.0]
    assert 0 < document["score"] < 1 and document["model"]["method"] == "adaclip"
    assert document["model"]["layers"] == list(ADACLIP_LAYERS)
    assert np.asarray(Image.open(out / "scan" / "overlay.png")).shape == (60, 90, 3)
