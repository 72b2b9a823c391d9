"""`--compile` against eager: compile time, steady-state speed and how far outputs move.

    python benchmarks/bench_compile.py [--presets tiny vit-l-14-336] [--slices 2] [--rounds 3]
                                       [--device cpu] [--modes inductor]

Per preset (tiny at 224 px, ViT-L/14 at 518, random weights, layer 24) the eager predictor and a compiled
one share the backbone. The compiled predictor's first batch includes compiling (one compilation: every
batch has `--slices` images); its compile time is that first batch less a steady one. Rounds then
alternate eager and compiled so machine load hits both. `cuda-graphs` runs on CUDA only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor, Prediction

from machine import load_line, machine_line

IMAGE_SIZES = {"tiny": 224, "vit-b": 512, "vit-l-14-336": 518}


def timed(predictor: AnomalyPredictor, images: list[np.ndarray]) -> tuple[float, Prediction]:
    if predictor.device.type == "cuda":
        torch.cuda.synchronize(predictor.device)
    start = time.perf_counter()
    prediction = predictor.predict(images)  # maps come back to the host: the device has finished
    return time.perf_counter() - start, prediction


def bench_preset(preset: str, args: argparse.Namespace) -> None:
    size = IMAGE_SIZES[preset]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512), dtype=np.uint8) for _ in range(args.slices)]
    base = DetectorConfig(clip_weights=f"random:{preset}", method="ensemble", image_size=size, layers=(24,)
                          if preset != "vit-b" else (12,), device=args.device, batch_size=args.slices)
    eager = AnomalyPredictor(base)
    predictors = {"eager": eager}
    first_batch = {}
    for mode in args.modes:
        predictors[mode] = AnomalyPredictor(DetectorConfig(**{**base.__dict__, "compile": mode}),
                                            backbone=eager.backbone)
    results = {"eager": timed(eager, images)[1]}
    for mode in args.modes:
        first_batch[mode], results[mode] = timed(predictors[mode], images)
    timings: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            seconds, results[name] = timed(predictor, images)
            timings[name].append(seconds / args.slices)
    print(load_line())
    eager_time = float(np.median(timings["eager"]))
    print(f"random:{preset} @{size}, {args.slices} slices per batch x {args.rounds} rounds (median), "
          f"{args.device}, precision {eager.provenance()['precision']}")
    print(f"  eager:            {eager_time:.3f} s/slice")
    for mode in args.modes:
        steady = float(np.median(timings[mode]))
        compile_seconds = first_batch[mode] - steady * args.slices
        score_difference = float(np.abs(results[mode].scores - results["eager"].scores).max())
        map_difference = float(max(np.abs(a - b).max() for a, b in zip(results[mode].maps, results["eager"].maps)))
        print(f"  compile {mode + ':':<9} {steady:.3f} s/slice ({eager_time / steady:.2f}x), compiled in "
              f"{compile_seconds:.0f} s; vs eager: scores {score_difference:.1e}, maps {map_difference:.1e} max abs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "vit-l-14-336"], choices=sorted(IMAGE_SIZES))
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", default=None, choices=["inductor", "cuda-graphs"],
                        help="default: inductor, and cuda-graphs on CUDA")
    args = parser.parse_args()
    if args.modes is None:
        args.modes = ["inductor", "cuda-graphs"] if args.device.startswith("cuda") else ["inductor"]
    print(machine_line(args.device))
    print(f"before: {load_line()}")
    for preset in args.presets:
        bench_preset(preset, args)


if __name__ == "__main__":
    main()
