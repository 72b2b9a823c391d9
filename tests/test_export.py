"""Deployment exports (`medclip-ad export`): TorchScript and ONNX reproduce the eager predictor within 1e-4.

The detector under test is the parity fixture's tiny CLIP with its reference prompts, at 224 px. Each
exported file is reloaded here and run on a batch size it was not traced with, independently of the
export's own check.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference import export
from medclip_ad.inference.export import (
    EXPORT_FILE_NAMES,
    EXPORT_MANIFEST_FILE,
    EXPORT_TOLERANCE,
    ExportMismatchError,
    export_detector,
)
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.methods.adaclip.checkpoint import save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import AdaCLIP
from medclip_ad.methods.checkpoint import save_method_checkpoint
from medclip_ad.methods.rwda.head import RandomWordHead
from medclip_ad.modeling.text_encoder import TextEncoder

# Loading TorchScript is what a deployment does; torch 2.14 marks it deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

SIZE = 224
SMALL = 112  # for the tests about plumbing rather than numbers: a quarter of the patches


@pytest.fixture(scope="module")
def rwda_head(tmp_path_factory):
    """An untrained rwda head for the tiny backbone: exporting needs weights, not good ones."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rwda") / "head.safetensors"
    save_method_checkpoint(path, RandomWordHead(96).state_dict(), {"method": "rwda"})
    return path


def rwda_predictor(head_path, backbone) -> AnomalyPredictor:
    return AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="rwda", prompts=str(head_path),
                                           image_size=SMALL, device="cpu"), backbone=backbone)


@pytest.fixture(scope="module")
def predictor(parity_dir):
    return AnomalyPredictor(DetectorConfig(clip_weights=str(parity_dir / "tiny_clip_openai_format.pt"),
                                           prompts=str(parity_dir / "tiny_prompts_reference_format.pth"),
                                           image_size=SIZE, layers=(12, 24), device="cpu"))


def fresh_images(batch: int, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(42))


def assert_reproduces(predictor: AnomalyPredictor, scores: torch.Tensor, maps: torch.Tensor, images: torch.Tensor):
    eager_scores, eager_maps = predictor.predict_tensor(images)
    size = images.shape[-1]
    assert scores.shape == eager_scores.shape and maps.shape == eager_maps.shape == (len(images), size, size)
    assert (scores - eager_scores).abs().max() <= EXPORT_TOLERANCE
    assert (maps - eager_maps).abs().max() <= EXPORT_TOLERANCE


@pytest.fixture(scope="module")
def exported(predictor, tmp_path_factory):
    """Both formats exported once (one trace), as `export_detector` does by default."""
    out = tmp_path_factory.mktemp("export")
    checks = export_detector(predictor, out, export.available_formats())
    return out, {check.format: check for check in checks}


def test_torchscript_reproduces_eager_scores_and_maps(predictor, exported):
    out, checks = exported
    check = checks["torchscript"]
    assert check.passed
    assert check.max_score_difference <= EXPORT_TOLERANCE and check.max_map_difference <= EXPORT_TOLERANCE
    loaded = torch.jit.load(str(out / EXPORT_FILE_NAMES["torchscript"]))
    images = fresh_images(1)
    with torch.no_grad():
        assert_reproduces(predictor, *loaded(images), images)
    vision_bytes = 4 * sum(p.numel() for p in predictor.model.vision_encoder.parameters())
    assert (out / EXPORT_FILE_NAMES["torchscript"]).stat().st_size < 1.1 * vision_bytes  # the text encoder is left out
    manifest = json.loads((out / EXPORT_MANIFEST_FILE).read_text())
    assert manifest["input"]["shape"] == ["batch", 3, SIZE, SIZE] and manifest["model"]["layers"] == [12, 24]
    assert set(manifest["checks"]) == set(checks) and "warning" not in manifest


def test_onnx_reproduces_eager_scores_and_maps(predictor, exported):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out, checks = exported
    assert checks["onnx"].passed
    session = onnxruntime.InferenceSession(str(out / EXPORT_FILE_NAMES["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    images = fresh_images(4)
    scores, maps = session.run(["scores", "maps"], {"images": images.numpy()})
    assert_reproduces(predictor, torch.from_numpy(np.asarray(scores)), torch.from_numpy(np.asarray(maps)), images)


def test_export_command_exports_the_rwda_detector(rwda_head, tiny_backbone, tmp_path, capsys):
    out = tmp_path / "export"
    arguments = ["export", "--out", str(out), "--format", "torchscript", "--clip-weights", "random:tiny",
                 "--method", "rwda", "--prompts", str(rwda_head), "--image-size", str(SMALL), "--device", "cpu"]
    assert main(arguments) == 0
    assert "max abs difference to eager: scores" in capsys.readouterr().out
    loaded = torch.jit.load(str(out / EXPORT_FILE_NAMES["torchscript"]))
    images = fresh_images(3, SMALL)
    with torch.no_grad():
        assert_reproduces(rwda_predictor(rwda_head, tiny_backbone), *loaded(images), images)
    assert "RANDOM WEIGHTS" in json.loads((out / EXPORT_MANIFEST_FILE).read_text())["warning"]
    assert main(arguments) == 2 and "already exists" in capsys.readouterr().err
    assert main([*arguments, "--overwrite", "--precision", "bf16"]) == 2


def test_adaclip_exports_with_its_text_encoder_and_fusion(tiny_backbone, tmp_path):
    """AdaCLIP's text features depend on each image, so the export carries the whole prompted model."""
    torch.manual_seed(0)
    model = AdaCLIP(TextEncoder(tiny_backbone.model), tiny_backbone.model, SMALL)
    with torch.no_grad():
        for parameter in model.weights.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # away from the initial values: a real signal
    weights = tmp_path / "adaclip.safetensors"
    save_adaclip_checkpoint(weights, model, {"note": "test"})
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="adaclip", prompts=str(weights),
                                                image_size=SMALL, device="cpu"), backbone=tiny_backbone)
    checks = export_detector(predictor, tmp_path / "export")
    assert [check.format for check in checks] == list(export.available_formats()) and all(c.passed for c in checks)
    images = fresh_images(3, SMALL)
    loaded = torch.jit.load(str(tmp_path / "export" / EXPORT_FILE_NAMES["torchscript"]))
    with torch.no_grad():
        assert_reproduces(predictor, *loaded(images), images)
    if "onnx" in export.available_formats():
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "export" / EXPORT_FILE_NAMES["onnx"]),
                                               providers=["CPUExecutionProvider"])
        scores, maps = session.run(["scores", "maps"], {"images": images.numpy()})
        assert_reproduces(predictor, torch.from_numpy(np.asarray(scores)), torch.from_numpy(np.asarray(maps)), images)
    manifest = json.loads((tmp_path / "export" / EXPORT_MANIFEST_FILE).read_text())
    assert manifest["model"]["method"] == "adaclip" and manifest["model"]["layers"] == [6, 12, 18, 24]


def test_an_export_that_differs_is_refused_and_not_written(rwda_head, tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "EXPORT_TOLERANCE", -1.0)
    with pytest.raises(ExportMismatchError, match="FAILED"):
        export_detector(rwda_predictor(rwda_head, tiny_backbone), tmp_path, ["torchscript"])
    assert not list(tmp_path.iterdir())


def test_onnx_without_its_packages_is_a_user_error(predictor, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "onnx_available", lambda: False)
    assert export.available_formats() == ("torchscript",)
    with pytest.raises(UserInputError, match="pip install onnx onnxruntime"):
        export_detector(predictor, tmp_path, ["onnx"])
