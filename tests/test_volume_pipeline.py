"""The overlapped volume pipeline (a reader thread one batch ahead) gives exactly the sequential results."""

from __future__ import annotations

import numpy as np
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.volume import infer_volume
from medclip_ad.io.intensity import to_uint8
from medclip_ad.io.orientation import extract_slice, insert_slice, plane_layout


def _window(array: np.ndarray) -> np.ndarray:
    return to_uint8(array, -160.0, 240.0)


def test_overlapped_volume_pipeline_is_bit_identical_to_a_sequential_loop() -> None:
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
