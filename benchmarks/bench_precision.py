"""How far reduced precision moves scores and maps: the same images through fp32 and through bf16 (or fp16).

    python benchmarks/bench_precision.py [--clip-weights random:tiny] [--device cpu] [--images 96]
        [--image-size 112] [--methods ensemble adaclip] [--precision bf16]

Prints the machine, then per method the largest and mean absolute score difference, the number of
distinct scores out of the number of images (a precision that quantises the scoring head collapses
them), and the largest absolute map difference with the map range. AdaCLIP without a checkpoint uses
its initial weights moved off their starting values by a fixed seed, so its fusion has a signal.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.methods.adaclip.checkpoint import save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import AdaCLIP
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.modeling.text_encoder import TextEncoder
from scipy.ndimage import gaussian_filter

from machine import machine_line


def textured_images(count: int, side: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smoothed noise at random scales: distinct images whose scores spread, unlike constant ones."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        texture = gaussian_filter(rng.standard_normal((side, side)), rng.uniform(1.0, 6.0))
        images.append(np.clip(128 + 300 * texture, 0, 255).astype(np.uint8))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-weights", default="random:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--methods", nargs="+", default=["ensemble", "adaclip"], choices=["ensemble", "adaclip"])
    args = parser.parse_args()
    print(machine_line(args.device))
    backbone = load_clip(args.clip_weights)
    images = textured_images(args.images)
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods:
            prompts = adaclip_weights(backbone, args.image_size, Path(scratch)) if method == "adaclip" else None
            config = DetectorConfig(clip_weights=args.clip_weights, method=method, prompts=prompts,
                                    image_size=args.image_size, device=args.device, batch_size=16)
            report(method, backbone, config, args.precision, images)


def adaclip_weights(backbone, image_size: int, folder: Path) -> str:
    torch.manual_seed(0)
    model = AdaCLIP(TextEncoder(backbone.model), backbone.model, image_size)
    with torch.no_grad():
        for parameter in model.weights.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = folder / "adaclip.safetensors"
    save_adaclip_checkpoint(path, model, {})
    return str(path)


def report(method: str, backbone, config: DetectorConfig, precision: str, images: list[np.ndarray]) -> None:
    results = {}
    for name in ("fp32", precision):
        predictor = AnomalyPredictor(replace(config, precision=name), backbone=backbone)
        start = time.perf_counter()
        results[name] = predictor.predict(images)
        print(f"{method} {name}: {len(images) / (time.perf_counter() - start):.1f} images/s")
    full, reduced = results["fp32"], results[precision]
    score_difference = np.abs(full.scores - reduced.scores)
    map_difference = max(float(np.abs(a - b).max()) for a, b in zip(full.maps, reduced.maps))
    map_range = (min(float(m.min()) for m in full.maps), max(float(m.max()) for m in full.maps))
    print(f"{method} {precision} vs fp32 on {len(images)} images at {config.image_size} px: "
          f"score |diff| max {score_difference.max():.2e} mean {score_difference.mean():.2e}; "
          f"distinct scores {len(np.unique(reduced.scores))} ({len(np.unique(full.scores))} in fp32); "
          f"map |diff| max {map_difference:.2e} (maps span {map_range[0]:.3f}..{map_range[1]:.3f})")


if __name__ == "__main__":
    main()
