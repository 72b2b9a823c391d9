"""The reference pipeline's computation against ours, on the same random ViT-L weights, interleaved.

    python benchmarks/bench_side_by_side.py [--preset vit-l-14-336] [--slices 4] [--rounds 3]

Reference: one image per forward pass, the full DPAM computation (both paths in every block, every token
through the last block), the map blurred with scipy on the CPU and resized back. Ours: the predictor as
`infer` runs it (batched, only what the outputs read, blur on the model's device). Rounds alternate the
two so a change in machine load hits both; the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from medclip_ad.config import DetectorConfig
from medclip_ad.constants import BLUR_SIGMA, BLUR_TRUNCATE
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.preprocessing import preprocess
from medclip_ad.modeling.anomaly_maps import class_logits, layer_anomaly_maps, patch_probability_maps
from scipy.ndimage import gaussian_filter

from machine import machine_line
from reference_dpam import full_dpam_forward


def reference_pipeline(predictor: AnomalyPredictor, images: list[np.ndarray]) -> np.ndarray:
    """Score images one by one as the reference test loop does; returns the scores."""
    detector, size = predictor.model, predictor.config.image_size
    scores = []
    for image in images:
        with torch.no_grad():
            visual = full_dpam_forward(detector.vision_encoder, preprocess([image], size))
            text_features = detector.text_features()
            score = class_logits(visual.global_embedding, text_features).softmax(dim=-1)[0, 1]
            maps = [patch_probability_maps(tokens, text_features, size) for tokens in visual.layer_tokens]
            raw = layer_anomaly_maps(maps).sum(dim=1)[0].numpy()
        blurred = gaussian_filter(raw, sigma=BLUR_SIGMA, mode="reflect", truncate=BLUR_TRUNCATE)
        F.interpolate(torch.from_numpy(blurred)[None, None], size=image.shape[:2], mode="bilinear")
        scores.append(float(score))
    return np.asarray(scores, np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-l-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    print(machine_line("cpu"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512), dtype=np.uint8) for _ in range(args.slices)]
    predictor = AnomalyPredictor(DetectorConfig(clip_weights=f"random:{args.preset}", method="ensemble",
                                                image_size=args.image_size, layers=(24,), device="cpu",
                                                batch_size=args.slices))
    reference_scores, our_scores = reference_pipeline(predictor, images[:1]), predictor.predict(images[:1]).scores
    timings: dict[str, list[float]] = {"reference": [], "ours": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        reference_scores = reference_pipeline(predictor, images)
        timings["reference"].append((time.perf_counter() - start) / args.slices)
        start = time.perf_counter()
        our_scores = predictor.predict(images).scores
        timings["ours"].append((time.perf_counter() - start) / args.slices)
    reference, ours = float(np.median(timings["reference"])), float(np.median(timings["ours"]))
    print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print(f"random:{args.preset} @{args.image_size}, layer 24, {args.slices} slices x {args.rounds} rounds (median)")
    print(f"reference pipeline: {reference:.2f} s/slice")
    print(f"ours:               {ours:.2f} s/slice ({reference / ours:.2f}x)")
    print(f"max score difference: {float(np.abs(reference_scores - our_scores).max()):.1e}")


if __name__ == "__main__":
    main()
