"""The volume pipeline, with or without a reader thread one batch ahead, gives exactly the sequential results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from medclip_ad.inference import volume as volume_module
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.volume import infer_volume, reads_ahead
from medclip_ad.io.intensity import to_uint8
from medclip_ad.io.orientation import extract_slice, insert_slice, plane_layout


def _window(array: np.ndarray) -> np.ndarray:
    return to_uint8(array, -160.0, 240.0)


@pytest.mark.parametrize("ahead", [True, False])
def test_volume_pipeline_is_bit_identical_to_a_sequential_loop(monkeypatch, ahead: bool) -> None:
    monkeypatch.setattr(volume_module, "reads_ahead", lambda predictor: ahead)
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224,
                                                device="cpu", batch_size=3))
    volume = np.random.default_rng(0).normal(40, 80, (40, 36, 8)).astype(np.float32)
    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    for plane in ("sagittal", "coronal", "axial"):
        layout = plane_layout(plane, affine)
        axis = layout.slice_axis
        result = infer_volume(predictor, volume, layout, _window)
        expected_maps = np.empty(volume.shape, np.float32)
        expected_scores = []
        count = volume.shape[axis]
        for start in range(0, count, 3):
            indices = range(start, min(count, start + 3))
            prediction = predictor.predict([_window(extract_slice(volume, layout, index)) for index in indices])
            expected_scores.extend(prediction.scores)
            for index, slice_map in zip(indices, prediction.maps):
                insert_slice(expected_maps, layout, index, slice_map)
        np.testing.assert_array_equal(result.slice_scores, np.asarray(expected_scores, np.float32))
        np.testing.assert_array_equal(result.map_volume, expected_maps)


def test_reader_thread_only_where_the_model_leaves_a_core_idle(monkeypatch) -> None:
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224,
                                                device="cpu"))
    monkeypatch.setattr(volume_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert not reads_ahead(predictor)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert reads_ahead(predictor)
