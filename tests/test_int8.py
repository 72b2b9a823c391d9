"""`--precision int8`: the vision encoder's linear layers quantised on the CPU, close to fp32, backbone untouched."""

from __future__ import annotations

import numpy as np
import pytest
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.modeling.int8 import Int8Attention, int8_available

pytestmark = pytest.mark.skipif(not int8_available(), reason="this torch build has no x86 int8 kernels")


def _config(precision: str) -> DetectorConfig:
    return DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224, device="cpu",
                          batch_size=4, precision=precision)


def test_int8_is_close_to_fp32_and_leaves_the_backbone_alone() -> None:
    backbone = load_clip("random:tiny")
    images = [np.random.default_rng(seed).integers(0, 256, (200, 240), dtype=np.uint8) for seed in range(4)]
    fp32 = AnomalyPredictor(_config("fp32"), backbone=backbone)
    before = fp32.predict(images)
    int8 = AnomalyPredictor(_config("int8"), backbone=backbone)
    quantised = int8.predict(images)
    after = fp32.predict(images)

    encoder = int8.model.vision_encoder
    assert all(isinstance(block.attn, Int8Attention) for block in encoder.blocks)
    assert not any(isinstance(block.attn, Int8Attention) for block in backbone.model.visual.transformer.resblocks)
    np.testing.assert_array_equal(before.scores, after.scores)  # the shared fp32 backbone is unchanged
    score_difference = np.abs(quantised.scores - before.scores).max()
    map_difference = max(np.abs(a - b).max() for a, b in zip(quantised.maps, before.maps))
    assert 0 < score_difference < 1e-2 and 0 < map_difference < 2e-2
    assert int8.provenance()["precision"] == "int8"
    np.testing.assert_array_equal(int8.predict(images).scores, quantised.scores)  # deterministic
