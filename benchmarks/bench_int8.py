"""`--precision int8` against fp32 on the CPU: speed and how far scores and maps move.

    python benchmarks/bench_int8.py [--preset vit-l-14-336] [--slices 4] [--rounds 3]

Same random weights, same images, rounds interleaved (fp32, int8, fp32, ...) so machine load hits both.
Random weights say nothing about accuracy with real CLIP weights: measure that before relying on int8.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor

from machine import load_line, machine_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-l-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layer", type=int, default=24, help="map layer (12 for vit-b)")
    args = parser.parse_args()

    print(machine_line("cpu"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512), dtype=np.uint8) for _ in range(args.slices)]
    base = DetectorConfig(clip_weights=f"random:{args.preset}", method="ensemble", image_size=args.image_size,
                          layers=(args.layer,), device="cpu", batch_size=args.slices, precision="fp32")
    fp32 = AnomalyPredictor(base)
    int8 = AnomalyPredictor(DetectorConfig(**{**base.__dict__, "precision": "int8"}), backbone=fp32.backbone)
    predictors = {"fp32": fp32, "int8": int8}
    results = {name: predictor.predict(images[:1]) for name, predictor in predictors.items()}  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            start = time.perf_counter()
            results[name] = predictor.predict(images)
            timings[name].append((time.perf_counter() - start) / args.slices)
    fp32_time, int8_time = (float(np.median(timings[name])) for name in ("fp32", "int8"))
    score_difference = float(np.abs(results["fp32"].scores - results["int8"].scores).max())
    map_difference = float(max(np.abs(a - b).max() for a, b in zip(results["fp32"].maps, results["int8"].maps)))
    print(load_line())
    print(f"random:{args.preset} @{args.image_size}, {args.slices} slices x {args.rounds} rounds (median)")
    print(f"fp32: {fp32_time:.2f} s/slice")
    print(f"int8: {int8_time:.2f} s/slice ({fp32_time / int8_time:.2f}x)")
    print(f"int8 vs fp32: scores max abs {score_difference:.1e}, maps max abs {map_difference:.1e} "
          f"(map range [0, 1] per layer)")


if __name__ == "__main__":
    main()
