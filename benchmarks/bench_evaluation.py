"""Images per second of `medclip-ad evaluate` (`medclip_ad.evaluation.evaluate`) on a generated dataset.

    python benchmarks/bench_evaluation.py [--clip-weights random:tiny] [--device cpu] [--images 16]

Prints the machine, then one line per image size: the inference pass (reading, preprocessing, model,
keeping maps) and the whole evaluation (also metrics, curves, example overlays and report files). The
dataset is the generic `folder` layout, half normal and half anomalous with masks, so every metric is
computed. Random weights cost the same as real ones of the same shape.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import DatasetWarning, prepare_dataset
from medclip_ad.evaluation import evaluate
from medclip_ad.inference.predictor import AnomalyPredictor
from PIL import Image

from machine import machine_line


def make_folder_dataset(root: Path, count: int) -> Path:
    """`normal/`, `abnormal/` and `masks/` of 512 x 512 noise images; every abnormal one has a square lesion."""
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = "abnormal" if index % 2 else "normal"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8)).save(root / folder / f"{index:03d}.png")
        if folder == "abnormal":
            (root / "masks").mkdir(exist_ok=True)
            mask = np.zeros((512, 512), dtype=np.uint8)
            mask[100 + 10 * index:220 + 10 * index, 150:300] = 255
            Image.fromarray(mask).save(root / "masks" / f"{index:03d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-weights", default="random:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--images", type=int, default=16, help="images in the generated dataset")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[224, 518])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    print(machine_line(args.device))
    with tempfile.TemporaryDirectory() as temporary:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            manifest = prepare_dataset("folder", [make_folder_dataset(Path(temporary) / "data", args.images)])
        for image_size in args.image_sizes:
            config = DetectorConfig(clip_weights=args.clip_weights, method="ensemble", image_size=image_size,
                                    device=args.device, batch_size=args.batch_size, precision=args.precision)
            predictor = AnomalyPredictor(config)
            predictor.predict_tensor(torch.zeros(1, 3, image_size, image_size))  # warm-up
            report = evaluate(predictor, [manifest], Path(temporary) / f"out_{image_size}", show_progress=False)
            timing = report.timing
            print(f"{args.clip_weights} {predictor.provenance()['precision']} {image_size} px, batch "
                  f"{args.batch_size}: inference {timing['images_per_second']:.2f} images/s, whole evaluation "
                  f"{timing['end_to_end_images_per_second']:.2f} images/s ({timing['seconds']:.2f} s for "
                  f"{timing['images']} images of 512x512)")


if __name__ == "__main__":
    main()
