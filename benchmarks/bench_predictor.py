"""Images per second of the Python API (`AnomalyPredictor.predict`) at batch sizes 1, 4 and 8.

    python benchmarks/bench_predictor.py [--clip-weights random:tiny] [--device cpu] [--images 16]

Prints the machine, then one line per batch size. Random weights cost the same as real ones of the
same shape, so `random:vit-l-14-336` measures the published backbone's speed without its download.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from medclip_ad.config import DetectorConfig
from medclip_ad.predictor import AnomalyPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-weights", default="random:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--images", type=int, default=16, help="images per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"machine: {device_name}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512), dtype=np.uint8) for _ in range(args.images)]
    for batch_size in args.batch_sizes:
        config = DetectorConfig(clip_weights=args.clip_weights, method="ensemble", device=args.device,
                                batch_size=batch_size, precision=args.precision)
        predictor = AnomalyPredictor(config)
        predictor.predict(images[:batch_size])  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictor.predict(images)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        print(f"{args.clip_weights} {predictor.provenance()['precision']} batch {batch_size}: "
              f"{len(images) / elapsed:.2f} images/s ({elapsed:.2f} s for {len(images)} images of 512x512)")


if __name__ == "__main__":
    main()
