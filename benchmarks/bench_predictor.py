"""Images per second of the Python API (`AnomalyPredictor.predict`) at batch sizes 1, 4 and 8.

    python benchmarks/bench_predictor.py [--clip-weights random:tiny] [--device cpu] [--images 16]
        [--method ensemble|anomalyclip|rwda|adaclip] [--prompts CKPT]

Prints the machine, then one line per batch size. Random weights cost the same as real ones of the
same shape, so `random:vit-l-14-336` measures the published backbone's speed without its download.
`--method adaclip` without `--prompts` times AdaCLIP's initial weights, which cost what trained ones do.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.methods.registry import METHOD_NAMES
from medclip_ad.constants import IMAGE_SIZE
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.methods.adaclip.checkpoint import save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import AdaCLIP
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.modeling.text_encoder import TextEncoder

from machine import machine_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-weights", default="random:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--images", type=int, default=16, help="images per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--method", default="ensemble", choices=METHOD_NAMES)
    parser.add_argument("--prompts", help="the method's checkpoint (anomalyclip, rwda; optional for adaclip)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.method == "adaclip" and not args.prompts:
            args.prompts = initial_adaclip_weights(args.clip_weights, args.image_size, Path(scratch))
        measure(args)


def initial_adaclip_weights(clip_weights: str, image_size: int, folder: Path) -> str:
    backbone = load_clip(clip_weights)
    path = folder / "adaclip.safetensors"
    save_adaclip_checkpoint(path, AdaCLIP(TextEncoder(backbone.model), backbone.model, image_size), {})
    return str(path)


def measure(args: argparse.Namespace) -> None:

    print(machine_line(args.device))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512), dtype=np.uint8) for _ in range(args.images)]
    for batch_size in args.batch_sizes:
        config = DetectorConfig(clip_weights=args.clip_weights, method=args.method, prompts=args.prompts,
                                image_size=args.image_size, device=args.device, batch_size=batch_size,
                                precision=args.precision)
        predictor = AnomalyPredictor(config)
        predictor.predict(images[:batch_size])  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictor.predict(images)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        precision = predictor.provenance()["precision"]
        print(f"{args.method} {args.clip_weights} @{args.image_size} {precision} batch {batch_size}: "
              f"{len(images) / elapsed:.2f} images/s ({elapsed:.2f} s for {len(images)} images of 512x512)")


if __name__ == "__main__":
    main()
