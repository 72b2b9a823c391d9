"""The text-only `rwda` method: seeded random-word prompts, head training, its checkpoint, and inference.

Everything runs on the tiny random CLIP with a few dozen prompts per class, so the numbers mean nothing;
what is checked is the mechanics: seeding, loss going down, provenance, round trips, the CLI paths.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.methods.anomalyclip.checkpoint import load_prompt_checkpoint
from medclip_ad.io.file_digest import file_sha256
from medclip_ad.methods.checkpoint import load_method_checkpoint, save_method_checkpoint
from medclip_ad.methods.ensemble.prompt_ensemble import ensemble_sentences
from medclip_ad.methods.registry import build_detector
from medclip_ad.methods.rwda.head import RandomWordDetector, RandomWordHead
from medclip_ad.methods.rwda.random_word_prompts import RandomWordSettings, random_word_token_ids
from medclip_ad.methods.rwda.training import FINAL_CHECKPOINT, RandomWordTrainingConfig, train_random_word_head
from medclip_ad.modeling.tokenizer import tokenize
from PIL import Image

BACKBONE = ["--clip-weights", "random:tiny", "--device", "cpu"]
PROMPTS_PER_CLASS = 48
EPOCHS = 4


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One `medclip-ad train --method rwda` run, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("rwda_run")
    code = main(["train", "--method", "rwda", "--out", str(out), "--epochs", str(EPOCHS),
                 "--prompts-per-class", str(PROMPTS_PER_CLASS), *BACKBONE])
    assert code == 0
    return out


def test_prompts_are_seeded_balanced_and_diversified():
    settings = RandomWordSettings(prompts_per_class=30)
    token_ids, labels = random_word_token_ids(settings, seed=5, context_length=77)
    again, _ = random_word_token_ids(settings, seed=5, context_length=77)
    other, _ = random_word_token_ids(settings, seed=6, context_length=77)
    assert torch.equal(token_ids, again) and not torch.equal(token_ids, other)
    assert labels.tolist() == [0] * 30 + [1] * 30
    start, end = tokenize([""])[0, :2].tolist()
    assert (token_ids[:, 0] == start).all() and (token_ids.argmax(dim=1) > 1).all()
    assert ((token_ids == end).sum(dim=1) == 1).all() and (token_ids == start).sum() == 60
    assert len({tuple(row.tolist()) for row in token_ids}) == 60  # random words make every prompt distinct
    for label, sentences in enumerate(ensemble_sentences()):
        bases = [row[1:int(row.argmax())].tolist() for row in tokenize(sentences)]
        for row in token_ids[labels == label]:
            tokens = row[1:int(row.argmax())].tolist()
            assert any(_is_subsequence(base, tokens) and len(tokens) > len(base) for base in bases)


def test_training_lowers_the_loss_and_records_provenance(trained_run, capsys):
    with open(trained_run / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {int(row["epoch"]) for row in rows} == set(range(1, EPOCHS + 1))  # one row per step, every epoch
    metadata = load_method_checkpoint(trained_run / FINAL_CHECKPOINT, "rwda").metadata
    assert len(metadata["epoch_losses"]) == EPOCHS and metadata["epoch_losses"][-1] < metadata["epoch_losses"][0]
    checkpoint = load_method_checkpoint(trained_run / FINAL_CHECKPOINT, "rwda")
    metadata = checkpoint.metadata
    assert metadata["method"] == "rwda" and metadata["clip_weights"] == "random:tiny"
    assert metadata["training_data"] == {"random_word_prompts": 2 * PROMPTS_PER_CLASS}
    assert metadata["seed"] == 111 and metadata["epochs"] == EPOCHS and metadata["embed_dim"] == 96
    assert metadata["recipe"]["prompts"]["prompts_per_class"] == PROMPTS_PER_CLASS
    assert metadata["package_version"] and 0.0 <= metadata["train_accuracy"] <= 1.0


def test_checkpoint_round_trips_and_a_rerun_is_identical(trained_run, tmp_path):
    saved = load_method_checkpoint(trained_run / FINAL_CHECKPOINT, "rwda").tensors
    head = RandomWordHead.from_tensors(saved)
    assert all(torch.equal(value, saved[name]) for name, value in head.state_dict().items())
    config = RandomWordTrainingConfig(epochs=EPOCHS, prompts=RandomWordSettings(prompts_per_class=PROMPTS_PER_CLASS))
    rerun = train_random_word_head(DetectorConfig(clip_weights="random:tiny", device="cpu"), tmp_path, config,
                                   show_progress=False)
    again = load_method_checkpoint(rerun.final_checkpoint, "rwda").tensors
    assert saved.keys() == again.keys() and all(torch.equal(saved[name], again[name]) for name in saved)


def test_detector_gives_anomalyclip_shaped_outputs(trained_run, tiny_backbone):
    config = DetectorConfig(clip_weights="random:tiny", method="rwda", prompts=str(trained_run / FINAL_CHECKPOINT),
                            layers=(6, 24), image_size=224)
    model = build_detector(config, backbone=tiny_backbone).model
    assert isinstance(model, RandomWordDetector) and model.map_range == 2.0
    with torch.no_grad():
        output = model(torch.randn(2, 3, 224, 224))
    assert output.image_logits.shape == (2, 2) and len(output.probability_maps) == 2
    for probabilities in output.probability_maps:
        assert probabilities.shape == (2, 2, 224, 224)
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(2, 224, 224), atol=1e-5)


@pytest.mark.parametrize("method_option", [["--method", "rwda"], []], ids=["named", "from the checkpoint"])
def test_infer_command_runs_the_rwda_head(trained_run, tmp_path, method_option):
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    checkpoint = trained_run / FINAL_CHECKPOINT
    assert main(["infer", str(image), "--out", str(tmp_path / "out"), *method_option, "--prompts", str(checkpoint),
                 "--image-size", "224", *BACKBONE]) == 0
    document = json.loads((tmp_path / "out" / "scan" / "scores.json").read_text())
    assert document["model"]["method"] == "rwda" and document["model"]["prompts_sha256"] == file_sha256(checkpoint)
    assert 0 < document["score"] < 1 and np.load(tmp_path / "out" / "scan" / "anomaly_map.npy").shape == (50, 70)


def test_wrong_checkpoints_and_options_get_one_clear_line(trained_run, parity_dir, tiny_backbone, tmp_path, capsys):
    checkpoint = str(trained_run / FINAL_CHECKPOINT)
    with pytest.raises(UserInputError, match="pass --method rwda"):
        build_detector(DetectorConfig(clip_weights="random:tiny", prompts=checkpoint), backbone=tiny_backbone)
    reference = parity_dir / "tiny_prompts_reference_format.pth"
    imported = tmp_path / "prompts.safetensors"
    save_method_checkpoint(imported, load_prompt_checkpoint(reference).tensors, {"method": "anomalyclip"})
    for prompts, message in ((reference, "not a rwda checkpoint"), (imported, "a checkpoint of method anomalyclip")):
        with pytest.raises(UserInputError, match=message):
            build_detector(DetectorConfig(clip_weights="random:tiny", method="rwda", prompts=str(prompts)),
                           backbone=tiny_backbone)
    with pytest.raises(UserInputError, match="needs its trained head"):
        build_detector(DetectorConfig(clip_weights="random:tiny", method="rwda"), backbone=tiny_backbone)
    other_backbone = tmp_path / "wide.safetensors"
    save_method_checkpoint(other_backbone, RandomWordHead(768).state_dict(), {"method": "rwda"})
    with pytest.raises(UserInputError, match="768-dimensional embeddings but the backbone random:tiny has 96"):
        build_detector(DetectorConfig(clip_weights="random:tiny", method="rwda", prompts=str(other_backbone)),
                       backbone=tiny_backbone)
    assert main(["train", "--out", str(tmp_path / "a"), *BACKBONE]) == 2
    assert "--manifest: anomalyclip training needs" in capsys.readouterr().err
    assert main(["train", "--method", "rwda", "--manifest", "m.json", "--out", str(tmp_path / "b"), *BACKBONE]) == 2
    assert "not used by --method rwda" in capsys.readouterr().err


def _is_subsequence(part: list[int], whole: list[int]) -> bool:
    remaining = iter(whole)
    return all(token in remaining for token in part)
