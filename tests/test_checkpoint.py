"""Prompt checkpoints: reference import, our safetensors round trip, and refusals of what does not fit."""

from __future__ import annotations

import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.methods.anomalyclip.checkpoint import (
    PromptShape,
    learner_tensors,
    load_into_learner,
    load_prompt_checkpoint,
)
from medclip_ad.methods.anomalyclip.prompt_learner import ObjectAgnosticPromptLearner
from medclip_ad.methods.checkpoint import save_method_checkpoint
from medclip_ad.methods.registry import build_detector
from medclip_ad.modeling.text_encoder import TextEncoder
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def reference_path(parity_dir):
    return parity_dir / "tiny_prompts_reference_format.pth"


def test_reference_import_keeps_learned_tensors_and_drops_the_rest(reference_path):
    reference = torch.load(reference_path, weights_only=True)["prompt_learner"]
    checkpoint = load_prompt_checkpoint(reference_path)
    expected = ["ctx_normal", "ctx_abnormal"] + [f"deep_prompts.{i}" for i in range(8)]
    assert sorted(checkpoint.tensors) == sorted(expected)
    assert torch.equal(checkpoint.tensors["ctx_normal"], reference["ctx_pos"].reshape(12, 128))
    assert torch.equal(checkpoint.tensors["ctx_abnormal"], reference["ctx_neg"].reshape(12, 128))
    assert torch.equal(checkpoint.tensors["deep_prompts.7"], reference["compound_prompts_text.7"])
    assert PromptShape.of(checkpoint) == PromptShape(n_ctx=12, depth=9, deep_length=4, text_width=128)


def test_fixed_sentence_parts_equal_the_reference_buffers(reference_path, tiny_backbone, parity_dir):
    from medclip_ad.modeling.clip_backbone import load_clip

    reference = torch.load(reference_path, weights_only=True)["prompt_learner"]
    learner = ObjectAgnosticPromptLearner(TextEncoder(load_clip(str(parity_dir / "tiny_clip_openai_format.pt")).model))
    assert torch.equal(learner.token_ids, torch.cat([reference["tokenized_prompts_pos"][0],
                                                     reference["tokenized_prompts_neg"][0]]).long())
    assert torch.allclose(learner.prefix[0], reference["token_prefix_pos"].reshape(1, 128))
    assert torch.allclose(learner.suffix[1], reference["token_suffix_neg"].reshape(64, 128))


def test_safetensors_round_trip_with_provenance(tiny_backbone, tmp_path):
    learner = ObjectAgnosticPromptLearner(TextEncoder(tiny_backbone.model))
    metadata = {"method": "anomalyclip", "backbone": "random:tiny", "layers": [24], "epochs": 15, "seed": 111,
                "training_data": {"colondb": 380, "endo": 163}}
    path = tmp_path / "prompts.safetensors"
    save_method_checkpoint(path, learner_tensors(learner), metadata)
    loaded = load_prompt_checkpoint(path)
    assert loaded.metadata["layers"] == [24] and loaded.metadata["training_data"] == {"colondb": 380, "endo": 163}
    assert loaded.metadata["package_version"] and loaded.metadata["format"] == "medclip-ad-prompts"
    fresh = ObjectAgnosticPromptLearner(TextEncoder(tiny_backbone.model))
    load_into_learner(loaded, fresh)
    with torch.no_grad():
        assert torch.equal(fresh(), learner())
    assert not list(tmp_path.glob(".*partial"))


def test_import_checkpoint_command_gives_identical_text_features(reference_path, parity_dir, tmp_path, capsys):
    out = tmp_path / "imported.safetensors"
    assert main(["import-checkpoint", str(reference_path), "--out", str(out), "--training-data", "fixture"]) == 0
    assert "43008" not in capsys.readouterr().out  # tiny model: 2*12*128 + 8*4*128 values
    weights = str(parity_dir / "tiny_clip_openai_format.pt")
    features = [build_detector(DetectorConfig(clip_weights=weights, prompts=str(p))).model.text_features()
                for p in (reference_path, out)]
    assert torch.equal(features[0], features[1])
    assert load_prompt_checkpoint(out).metadata["training_data"] == "fixture"
    assert main(["import-checkpoint", str(reference_path), "--out", str(out)]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err


def test_prompts_for_another_backbone_are_refused(tiny_backbone, tmp_path):
    path = tmp_path / "vit-l-prompts.safetensors"
    tensors = {"ctx_normal": torch.zeros(12, 768), "ctx_abnormal": torch.zeros(12, 768),
               **{f"deep_prompts.{i}": torch.zeros(4, 768) for i in range(8)}}
    save_method_checkpoint(path, tensors, {"method": "anomalyclip"})
    with pytest.raises(UserInputError, match="text width 768 but the backbone random:tiny has text width 128"):
        build_detector(DetectorConfig(clip_weights="random:tiny", prompts=str(path)), backbone=tiny_backbone)


@pytest.mark.parametrize("writer, message", [
    (lambda p: p.write_bytes(b"not a checkpoint at all"), "not a readable prompt checkpoint"),
    (lambda p: torch.save({"state_dict": {}}, p), "not a prompt checkpoint"),
    (lambda p: torch.save({"prompt_learner": {"ctx_neg": torch.zeros(1)}}, p), "lacks ctx_pos"),
    (lambda p: save_file({"x": torch.zeros(1)}, str(p)), "not a medclip-ad prompt checkpoint"),
])
def test_bad_prompt_files_get_one_clear_line(tmp_path, writer, message):
    path = tmp_path / "prompts.pth"
    writer(path)
    with pytest.raises(UserInputError) as error:
        load_prompt_checkpoint(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_missing_prompts_for_anomalyclip_suggests_the_alternatives(tiny_backbone):
    with pytest.raises(UserInputError, match="--method ensemble"):
        build_detector(DetectorConfig(clip_weights="random:tiny"), backbone=tiny_backbone)
