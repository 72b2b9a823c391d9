"""On the CPU the predictor runs a batch through the model in passes of bounded token rows, with unchanged outputs."""

from __future__ import annotations

import numpy as np
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import CPU_TOKEN_ROWS_PER_PASS, AnomalyPredictor


def test_a_large_cpu_batch_runs_in_passes_with_the_outputs_of_one(tiny_backbone) -> None:
    images = [np.random.default_rng(seed).integers(0, 256, (120, 150), dtype=np.uint8) for seed in range(9)]
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224,
                                                layers=(6, 12, 18, 24), device="cpu", batch_size=9),
                                 backbone=tiny_backbone)
    tokens = (224 // 14) ** 2 + 1
    assert predictor._images_per_pass == CPU_TOKEN_ROWS_PER_PASS // tokens == 7
    passes = []
    hook = predictor.model.vision_encoder.register_forward_hook(lambda _, inputs, __: passes.append(len(inputs[0])))
    batched = predictor.predict(images, with_layers=True)
    hook.remove()
    assert passes == [7, 2]

    predictor._images_per_pass = None  # the whole batch in one pass, as on CUDA
    whole = predictor.predict(images, with_layers=True)
    one_by_one = [predictor.predict([image], with_layers=True) for image in images]
    np.testing.assert_allclose(batched.scores, whole.scores, atol=1e-6, rtol=0)
    np.testing.assert_allclose(batched.scores, [single.scores[0] for single in one_by_one], atol=1e-6, rtol=0)
    for index, single in enumerate(one_by_one):
        np.testing.assert_allclose(batched.maps[index], whole.maps[index], atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched.layer_maps[index], single.layer_maps[0], atol=1e-5, rtol=0)
