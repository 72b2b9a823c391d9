"""Provenance is enforced, not only written.

- Inference takes layers and image size from the checkpoint; contradicting values are refused in one line.
- `--resume` refuses another recipe than the checkpoint's (options, layers, image size, data).
- scores.json records the CLIP weights file and its sha256 beside the prompts', and the input path
  absolute and resolved, so a result opens from any working directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import prepare_dataset
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import run_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.readers import read_study
from medclip_ad.methods.anomalyclip.checkpoint import learner_tensors, new_prompt_learner
from medclip_ad.methods.anomalyclip.training import TrainingConfig, train_prompts
from medclip_ad.io.file_digest import file_sha256
from medclip_ad.methods.checkpoint import save_method_checkpoint
from medclip_ad.modeling.text_encoder import TextEncoder
from PIL import Image
from safetensors.torch import save_file

from mini_datasets import make_endo, make_kvasir

TINY = ["--clip-weights", "random:tiny", "--device", "cpu"]


@pytest.fixture(scope="module")
def recorded_prompts(tmp_path_factory, tiny_backbone) -> Path:
    """Prompts whose checkpoint says they were trained at layers 12 and 24 and 112 px."""
    path = tmp_path_factory.mktemp("prompts") / "prompts.safetensors"
    tensors = learner_tensors(new_prompt_learner(TextEncoder(tiny_backbone.model)))
    save_method_checkpoint(path, tensors, {"method": "anomalyclip", "layers": [12, 24], "image_size": 112})
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)).save(path)
    return path


def test_inference_uses_the_layers_and_image_size_of_the_checkpoint(recorded_prompts, photo, tmp_path):
    assert main(["infer", str(photo), "--out", str(tmp_path / "out"), "--prompts", str(recorded_prompts), *TINY]) == 0
    model = json.loads((tmp_path / "out" / "photo" / "scores.json").read_text())["model"]
    assert model["layers"] == [12, 24] and model["image_size"] == 112
    assert json.loads((tmp_path / "out" / "photo" / "scores.json").read_text())["map_range"] == [0.0, 2.0]


@pytest.mark.parametrize("option, expected", [(["--layers", "24"], "trained with --layers 12 24, not 24"),
                                              (["--image-size", "224"], "trained with --image-size 112, not 224")])
def test_contradicting_options_are_refused_in_one_line(option, expected, recorded_prompts, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", str(photo), "--out", str(out), "--prompts", str(recorded_prompts), *TINY, *option]) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error and len(error.splitlines()) == 1 and not out.exists()


def test_the_api_refuses_a_contradicting_config(recorded_prompts, tiny_backbone):
    config = DetectorConfig(clip_weights="random:tiny", prompts=str(recorded_prompts), layers=(24,), image_size=112,
                            device="cpu")
    with pytest.raises(UserInputError, match="trained with --layers 12 24"):
        AnomalyPredictor(config, backbone=tiny_backbone)


def test_scores_json_records_the_weights_sha256_and_an_absolute_input(tiny_backbone, photo, tmp_path, monkeypatch):
    weights = tmp_path / "tiny_clip.safetensors"
    save_file({name: value.contiguous() for name, value in tiny_backbone.model.state_dict().items()}, str(weights))
    monkeypatch.chdir(photo.parent)
    predictor = AnomalyPredictor(DetectorConfig(clip_weights=str(weights), method="ensemble", image_size=112,
                                                device="cpu"))
    document = run_case(predictor, read_study(Path("photo.png")), Path("out"))
    assert document["input"] == str(photo.resolve())
    model = json.loads((photo.parent / "out" / "photo" / "scores.json").read_text())["model"]
    assert model["clip_weights_file"] == str(weights.resolve())
    assert model["clip_weights_sha256"] == file_sha256(weights) and model["prompts_sha256"] is None


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return [prepare_dataset("kvasir", [make_kvasir(root / "Kvasir-SEG")]),
            prepare_dataset("endo", [make_endo(root / "endo")])]


RESUME_DETECTOR = DetectorConfig(clip_weights="random:tiny", image_size=112, device="cpu")
RESUME_RECIPE = TrainingConfig(epochs=1, batch_size=4)


@pytest.fixture(scope="module")
def first_epoch(manifests, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train_prompts(RESUME_DETECTOR, manifests, out, RESUME_RECIPE, show_progress=False)
    return out / "epoch_001.safetensors"


@pytest.mark.parametrize("detector_change, recipe_change, expected", [
    ({}, {"learning_rate": 0.01}, "trained with learning_rate 0.001, but this run asks for 0.01"),
    ({"layers": (12, 24)}, {}, "trained with layers [24], but this run asks for [12, 24]"),
    ({"image_size": 140}, {}, "trained with image_size 112, but this run asks for 140"),
])
def test_resume_refuses_another_recipe(detector_change, recipe_change, expected, manifests, first_epoch, tmp_path):
    detector = DetectorConfig(**{**RESUME_DETECTOR.__dict__, **detector_change})
    recipe = TrainingConfig(**{**RESUME_RECIPE.__dict__, "epochs": 2, **recipe_change})
    with pytest.raises(UserInputError) as error:
        train_prompts(detector, manifests, tmp_path / "resumed", recipe, resume=first_epoch, show_progress=False)
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "resumed").exists()
