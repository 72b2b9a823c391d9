"""Reduced precision stays in the backbone: under bf16 autocast, scores and maps are still fp32 numbers.

Before the precision policy, bf16 reached the scoring head: on these 96 images the tiny model's scores
moved by up to 2.2e-3 and took only 75 distinct values (AdaCLIP's x100 logits: 27).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.methods.adaclip.detector import AdaCLIP
from medclip_ad.modeling.anomaly_maps import class_logits, patch_probability_maps
from medclip_ad.modeling.text_encoder import TextEncoder
from scipy.ndimage import gaussian_filter

SIZE = 112
IMAGES = 96


def textured_images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(128 + 300 * gaussian_filter(rng.standard_normal((64, 64)), rng.uniform(1.0, 6.0)), 0, 255)
            .astype(np.uint8) for _ in range(count)]


def _predictor(backbone, precision: str) -> AnomalyPredictor:
    config = DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=SIZE, device="cpu",
                            precision=precision, batch_size=16)
    return AnomalyPredictor(config, backbone=backbone)


def test_bf16_backbone_scores_within_2e3_of_fp32_and_not_quantised(tiny_backbone):
    images = textured_images(IMAGES)
    full = _predictor(tiny_backbone, "fp32").predict(images)
    reduced_predictor = _predictor(tiny_backbone, "bf16")
    reduced = reduced_predictor.predict(images)
    assert reduced_predictor.provenance()["precision"] == "bfloat16"
    assert np.ptp(full.scores) > 0.03  # the scores spread, so distinct values are a fair test
    assert np.abs(full.scores - reduced.scores).max() < 2e-3
    assert len(np.unique(reduced.scores)) == len(np.unique(full.scores)) == IMAGES
    assert reduced.scores.dtype == np.float32 and all(m.dtype == np.float32 for m in reduced.maps)
    assert max(float(np.abs(a - b).max()) for a, b in zip(full.maps, reduced.maps)) < 1e-2


def test_scoring_head_ignores_autocast():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.nn.functional.normalize(torch.randn(2, 1 + 49, 96, generator=generator), dim=-1).bfloat16()
    text = torch.nn.functional.normalize(torch.randn(2, 96, generator=generator), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = class_logits(tokens, text)
        maps = patch_probability_maps(tokens, text, SIZE)
    assert logits.dtype == maps.dtype == torch.float32
    torch.testing.assert_close(logits, tokens.float() @ text.t() / 0.07, rtol=0, atol=1e-5)
    torch.testing.assert_close(maps, patch_probability_maps(tokens.float(), text, SIZE), rtol=0, atol=1e-6)


def test_adaclip_logits_and_maps_are_fp32_under_autocast(tiny_backbone):
    model = AdaCLIP(TextEncoder(tiny_backbone.model), tiny_backbone.model, SIZE).eval()
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images)
    assert output.image_logits.dtype == output.probability_maps[0].dtype == torch.float32


def test_fp16_is_refused_on_the_cpu(tiny_backbone):
    with pytest.raises(UserInputError, match="fp16: runs on CUDA only"):
        _predictor(tiny_backbone, "fp16")
