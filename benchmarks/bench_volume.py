"""Slices per second of volume inference, batched, against a loop shaped like the reference's test loop.

    python benchmarks/bench_volume.py [--presets tiny vit-b] [--slices 16] [--batch-sizes 1 4 8 16] [--rounds 1]

The naive loop scores one slice at a time and blurs each map with scipy on the CPU, as the reference
test script does; ours batches slices, blurs on the model's device and keeps text features cached.
Both run in the same process on the same volume (Fortran-ordered, as nibabel returns NIfTI data), so the
ratio is meaningful on any machine. Each batch size is also run without the reader thread (the batches
read, then scored, one after the other) to show what overlapping reading with scoring gains; with
`--rounds N` the two alternate N times and the medians are compared, so a change in machine load hits
both. The load average is printed with each line.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from medclip_ad.config import DetectorConfig
from medclip_ad.constants import BLUR_SIGMA, BLUR_TRUNCATE
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.preprocessing import preprocess
from medclip_ad.inference.volume import infer_volume
from medclip_ad.io.intensity import to_uint8
from medclip_ad.io.orientation import extract_slice, insert_slice, plane_layout
from medclip_ad.modeling.anomaly_maps import layer_anomaly_maps
from scipy.ndimage import gaussian_filter

from machine import load_line, machine_line

# ViT-B/16 needs a multiple of 16; the other presets use the published 518. Maps from the last block.
IMAGE_SIZES = {"tiny": 518, "vit-b": 512, "vit-l-14-336": 518}
LAST_BLOCK = {"tiny": 24, "vit-b": 12, "vit-l-14-336": 24}
AXIAL = plane_layout("axial", None)  # the synthetic volume has identity geometry


def soft_tissue(array: np.ndarray) -> np.ndarray:
    """The 400/40 CT window both paths use."""
    return to_uint8(array, -160.0, 240.0)


def naive_reference_loop(predictor: AnomalyPredictor, volume: np.ndarray) -> np.ndarray:
    """One slice per forward pass, maps blurred one by one with scipy, then resized back."""
    maps = np.empty(volume.shape, dtype=np.float32)
    for index in range(volume.shape[2]):
        image = soft_tissue(volume[:, :, index].T)
        with torch.no_grad():
            output = predictor.model(preprocess([image], predictor.config.image_size).to(predictor.device))
        raw = layer_anomaly_maps(output.probability_maps).sum(dim=1)[0].cpu().numpy()
        blurred = gaussian_filter(raw, sigma=BLUR_SIGMA, mode="reflect", truncate=BLUR_TRUNCATE)
        resized = F.interpolate(torch.from_numpy(blurred)[None, None], size=image.shape, mode="bilinear")
        maps[:, :, index] = resized[0, 0].numpy().T
    return maps


def _timed(function) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def sequential_batches(predictor: AnomalyPredictor, volume: np.ndarray) -> None:
    """`infer_volume` without the reader thread: each batch is read and windowed, then scored."""
    map_volume = np.empty(volume.shape, np.float32)
    batch_size = predictor.config.batch_size
    for start in range(0, volume.shape[2], batch_size):
        indices = range(start, min(volume.shape[2], start + batch_size))
        prediction = predictor.predict([soft_tissue(extract_slice(volume, AXIAL, index)) for index in indices])
        for index, slice_map in zip(indices, prediction.maps):
            insert_slice(map_volume, AXIAL, index, slice_map)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "vit-b"], choices=sorted(IMAGE_SIZES))
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--side", type=int, default=512, help="in-plane size of the synthetic volume")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of overlapped and sequential runs")
    args = parser.parse_args()

    print(machine_line(args.device))
    shape = (args.side, args.side, args.slices)
    volume = np.asfortranarray(np.random.default_rng(0).normal(40, 60, shape).astype(np.float32))
    for preset in args.presets:
        weights = f"random:{preset}"
        base = DetectorConfig(clip_weights=weights, method="ensemble", image_size=IMAGE_SIZES[preset],
                              layers=(LAST_BLOCK[preset],),
                              device=args.device, precision=args.precision, batch_size=1)
        naive = AnomalyPredictor(base)
        naive_reference_loop(naive, volume[:, :, :1])  # warm-up
        naive_seconds = _timed(lambda: naive_reference_loop(naive, volume))
        naive_rate = args.slices / naive_seconds
        print(f"{weights} @{base.image_size}: naive reference-style loop {naive_rate:.2f} slices/s")
        for batch_size in args.batch_sizes:
            predictor = AnomalyPredictor(DetectorConfig(**{**base.__dict__, "batch_size": batch_size}),
                                         backbone=naive.backbone)
            infer_volume(predictor, volume[:, :, :batch_size], AXIAL, soft_tissue)  # warm-up
            overlapped, sequential = [], []
            for _ in range(args.rounds):
                overlapped.append(_timed(lambda: infer_volume(predictor, volume, AXIAL, soft_tissue)))
                sequential.append(_timed(lambda: sequential_batches(predictor, volume)))
            rate, sequential_rate = (args.slices / np.median(times) for times in (overlapped, sequential))
            print(f"{weights} @{base.image_size} {predictor.provenance()['precision']} batch {batch_size:>2}: "
                  f"infer_volume (reader thread) {rate:.2f} slices/s, {rate / naive_rate:.2f}x the naive loop; "
                  f"batches read in turn {sequential_rate:.2f} slices/s: overlap {rate / sequential_rate:.2f}x; "
                  f"{torch.get_num_threads()} torch threads; {load_line()}")


if __name__ == "__main__":
    main()
