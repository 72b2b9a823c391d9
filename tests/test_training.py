"""Prompt training: the published recipe's mechanics on tiny data, resume, and label-only mode."""

from __future__ import annotations

import csv

import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import DatasetWarning, Manifest, prepare_dataset
from medclip_ad.errors import UserInputError
from medclip_ad.methods.anomalyclip.checkpoint import load_prompt_checkpoint
from medclip_ad.methods.anomalyclip.training import TrainingConfig, train_prompts

from mini_datasets import make_brainmri, make_endo, make_kvasir

DETECTOR = DetectorConfig(clip_weights="random:tiny", image_size=224, device="cpu")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    kvasir = prepare_dataset("kvasir", [make_kvasir(root / "Kvasir-SEG")])
    endo = prepare_dataset("endo", [make_endo(root / "endo")])
    brain = prepare_dataset("brainmri", [make_brainmri(root / "brain")])
    return kvasir, endo, brain


def test_glocal_training_lowers_the_loss_and_records_provenance(manifests, tmp_path):
    kvasir, endo, _ = manifests
    config = TrainingConfig(epochs=2, batch_size=4)
    run = train_prompts(DETECTOR, [kvasir, endo], tmp_path, config, show_progress=False)
    assert run.loss_mode == "glocal" and run.epoch_losses[1] < run.epoch_losses[0]
    checkpoint = load_prompt_checkpoint(run.final_checkpoint)
    metadata = checkpoint.metadata
    assert metadata["epoch"] == 2 and metadata["seed"] == 111 and metadata["layers"] == [24]
    assert metadata["training_data"] == {"kvasir": 4, "endo": 6} and metadata["clip_weights"] == "random:tiny"
    assert metadata["recipe"]["learning_rate"] == 1e-3 and metadata["recipe"]["betas"] == [0.5, 0.999]
    assert not checkpoint.optimizer_state or all(k.startswith(("ctx", "deep")) for k in checkpoint.optimizer_state)
    with open(tmp_path / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 and all(float(row["local_loss"]) > 0 for row in rows)


def test_resumed_run_continues_from_its_epoch_and_matches_a_straight_run(manifests, tmp_path):
    kvasir, endo, _ = manifests
    straight = train_prompts(DETECTOR, [kvasir, endo], tmp_path / "straight", TrainingConfig(epochs=2, batch_size=4),
                             show_progress=False)
    train_prompts(DETECTOR, [kvasir, endo], tmp_path / "split", TrainingConfig(epochs=1, batch_size=4),
                  show_progress=False)
    resumed = train_prompts(DETECTOR, [kvasir, endo], tmp_path / "split", TrainingConfig(epochs=2, batch_size=4),
                            resume=tmp_path / "split" / "epoch_001.safetensors", show_progress=False)
    assert len(resumed.epoch_losses) == 1
    assert resumed.epoch_losses[0] == pytest.approx(straight.epoch_losses[1], rel=1e-5)
    a, b = (load_prompt_checkpoint(r.final_checkpoint).tensors for r in (straight, resumed))
    assert all(torch.allclose(a[name], b[name], atol=1e-6) for name in a)
    with pytest.raises(UserInputError, match="already trained 2 epochs"):
        train_prompts(DETECTOR, [kvasir, endo], tmp_path / "split", TrainingConfig(epochs=2),
                      resume=tmp_path / "split" / "epoch_002.safetensors", show_progress=False)


def test_anomalous_images_without_masks_enter_the_local_loss_with_a_warning(manifests, tmp_path):
    kvasir, _, brain = manifests  # brain: labels only, so its anomalous images have no mask
    with pytest.warns(DatasetWarning, match="3 anomalous training image"):
        run = train_prompts(DETECTOR, [kvasir, brain], tmp_path, TrainingConfig(epochs=1, batch_size=1),
                            show_progress=False)
    assert run.loss_mode == "glocal"
    with open(tmp_path / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    # One image per step: each unmasked image, normal or anomalous, has a local term of its own (all-zero mask).
    assert len(rows) == 10 and all(float(row["local_loss"]) > 0 for row in rows)
    assert load_prompt_checkpoint(run.final_checkpoint).metadata["activation"] == "quick_gelu"


def test_image_labels_only_data_trains_the_global_loss(manifests, tmp_path):
    run = train_prompts(DETECTOR, [manifests[2]], tmp_path, TrainingConfig(epochs=1, batch_size=3),
                        show_progress=False)
    assert run.loss_mode == "global only (no masks)"
    with open(tmp_path / "train_log.csv") as handle:
        assert all(float(row["local_loss"]) == 0 for row in csv.DictReader(handle))


def test_one_class_data_is_refused(manifests, tmp_path):
    with pytest.raises(UserInputError, match="both normal and anomalous"):
        train_prompts(DETECTOR, [manifests[0]], tmp_path, TrainingConfig(epochs=1), show_progress=False)


def test_train_command_writes_epoch_checkpoints(manifests, tmp_path, capsys):
    kvasir, endo, _ = manifests
    paths = []
    for manifest, name in ((kvasir, "k.json"), (endo, "e.json")):
        manifest.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    code = main(["train", "--manifest", *paths, "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "5",
                 "--clip-weights", "random:tiny", "--image-size", "224", "--device", "cpu"])
    assert code == 0 and (tmp_path / "run" / "epoch_001.safetensors").is_file()
    assert "prompts.safetensors" in capsys.readouterr().out
    assert Manifest.load(tmp_path / "k.json").dataset == "kvasir"
