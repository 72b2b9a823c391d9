"""The volume pipeline, its reader thread one batch ahead, gives exactly the results of a sequential loop."""

from __future__ import annotations

import threading

import numpy as np
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor, Prediction
from medclip_ad.inference.volume import infer_volume
from medclip_ad.io.intensity import to_uint8
from medclip_ad.io.orientation import extract_slice, insert_slice, plane_layout

from probe_detector import PreparedFromPredict


def _window(array: np.ndarray) -> np.ndarray:
    return to_uint8(array, -160.0, 240.0)


def test_volume_pipeline_is_bit_identical_to_a_sequential_loop() -> None:
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


class _OverlapProbe(PreparedFromPredict):
    """Scoring the first batch waits until the second is being read: it passes only if reading runs ahead."""

    def __init__(self) -> None:
        self.config = DetectorConfig(clip_weights="random:tiny", batch_size=2)
        self.second_read = threading.Event()
        self.readers: list[str] = []
        self.overlapped = False

    def prepare(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self.readers.append(threading.current_thread().name)
        if len(self.readers) == 2:
            self.second_read.set()
        return list(images)

    def predict(self, images: list[np.ndarray]) -> Prediction:
        if not self.second_read.is_set():
            self.overlapped = self.second_read.wait(timeout=10)
        return Prediction(np.zeros(len(images), np.float32), [np.zeros(image.shape, np.float32) for image in images])


def test_the_next_batch_is_read_while_this_one_is_scored() -> None:
    probe = _OverlapProbe()
    infer_volume(probe, np.zeros((6, 5, 4), np.float32), plane_layout("axial", None), _window)
    assert probe.overlapped
    assert probe.readers and all(name.startswith("slice-reader") for name in probe.readers)
