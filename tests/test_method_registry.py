"""The method registry: nothing outside methods/ names a method, and every method's detector returns the
one typed output the predictor reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.methods.adaclip.checkpoint import save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import AdaCLIP
from medclip_ad.methods.anomalyclip.checkpoint import learner_tensors, new_prompt_learner
from medclip_ad.methods.checkpoint import save_method_checkpoint
from medclip_ad.methods.output import DetectorOutput
from medclip_ad.methods.registry import METHOD_NAMES, build_detector
from medclip_ad.methods.rwda.head import RandomWordHead
from medclip_ad.modeling.text_encoder import TextEncoder

from conftest import REPO_ROOT

SIZE = 224
CODE = [*sorted((REPO_ROOT / "medclip_ad").rglob("*.py")), *sorted((REPO_ROOT / "app").rglob("*.py"))]
METHODS_FOLDER = REPO_ROOT / "medclip_ad" / "methods"


def method_references(path: Path) -> list[str]:
    """String literals that are a method's name, and imports of a method's own modules, in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and node.value in METHOD_NAMES:
            found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}")
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for module in modules:
            if any(module.startswith(f"medclip_ad.methods.{name}") for name in METHOD_NAMES):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: import {module}")
    return found


def test_no_module_outside_methods_names_a_method():
    outside = [path for path in CODE if METHODS_FOLDER not in path.parents]
    assert len(outside) > 50  # the whole package and the viewer were read
    assert [reference for path in outside for reference in method_references(path)] == []


def test_the_check_sees_method_names():
    assert method_references(METHODS_FOLDER / "anomalyclip" / "checkpoint.py")  # it does name its method


@pytest.fixture(scope="module")
def checkpoints(tiny_backbone, tmp_path_factory) -> dict[str, str | None]:
    """A checkpoint of every trained method for the tiny backbone, with random weights."""
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    text_encoder = TextEncoder(tiny_backbone.model)
    save_method_checkpoint(root / "prompts.safetensors", learner_tensors(new_prompt_learner(text_encoder)),
                           {"method": "anomalyclip"})
    save_method_checkpoint(root / "head.safetensors", RandomWordHead(96).state_dict(), {"method": "rwda"})
    save_adaclip_checkpoint(root / "adaclip.safetensors", AdaCLIP(text_encoder, tiny_backbone.model, SIZE), {})
    return {"anomalyclip": str(root / "prompts.safetensors"), "ensemble": None,
            "rwda": str(root / "head.safetensors"), "adaclip": str(root / "adaclip.safetensors")}


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_returns_the_typed_output_within_its_map_range(method, checkpoints, tiny_backbone):
    config = DetectorConfig(clip_weights="random:tiny", method=method, prompts=checkpoints[method], layers=(12, 24),
                            image_size=SIZE, device="cpu")
    model = build_detector(config, backbone=tiny_backbone).model.eval()
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        output = model(images)
    assert type(output) is DetectorOutput and output.image_logits.shape == (2, 2)
    assert output.map_range == model.map_range == len(output.probability_maps)
    assert all(p.shape == (2, 2, SIZE, SIZE) for p in output.probability_maps)
    predictor = AnomalyPredictor(config, backbone=tiny_backbone)
    scores, maps = predictor.predict_tensor(images)
    assert predictor.map_range == model.map_range and scores.shape == (2,)
    assert 0.0 <= float(maps.min()) and float(maps.max()) <= predictor.map_range
