"""The DPAM encoder computes only what its outputs read, and gets the numbers of the full computation."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.modeling.dpam import DPAMVisionEncoder

from conftest import REPO_ROOT


def _full_forward():
    """The full computation lives once, in benchmarks/ (not a package), beside the benchmark that times it."""
    spec = importlib.util.spec_from_file_location("reference_dpam", REPO_ROOT / "benchmarks" / "reference_dpam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.full_dpam_forward


@pytest.mark.parametrize("layers", [(24,), (6, 12, 18, 24), (3, 12), (7,)])
def test_savings_equal_the_full_computation(layers: tuple[int, ...]) -> None:
    backbone = load_clip("random:tiny")
    encoder = DPAMVisionEncoder(backbone.model, 224, layers).eval()
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, full = encoder(images), _full_forward()(encoder, images)
    assert torch.allclose(ours.global_embedding, full.global_embedding, atol=1e-6, rtol=0)
    assert len(ours.layer_tokens) == len(layers)
    for mine, theirs in zip(ours.layer_tokens, full.layer_tokens):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=1e-6, rtol=0)
