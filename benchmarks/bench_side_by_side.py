"""The reference pipeline's computation against ours, on the same random ViT-L weights, interleaved.

    python benchmarks/bench_side_by_side.py [--preset vit-l-14-336] [--slices 8] [--batch-sizes 1 8]
                                            [--rounds 3] [--profile]

Reference: one image per forward pass, the full DPAM computation (both paths in every block, every token
through the last block), the map blurred with scipy on the CPU and resized back. Ours: the predictor as
`infer` runs it (only what the outputs read, blur on the model's device), at each batch size asked for
(8 is `infer`'s default). Rounds alternate the paths so a change in machine load hits all of them; the
load average is printed before and after. Besides the median wall time per slice it prints the best
round's, the process's CPU time per slice (user + system, summed over threads) and the page faults per
slice, which move less with other jobs on the machine than the median does. `--profile` adds one
profiled pass per path and prints its operators by self CPU time.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from medclip_ad.config import DetectorConfig
from medclip_ad.constants import BLUR_SIGMA, BLUR_TRUNCATE
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.inference.preprocessing import preprocess
from medclip_ad.modeling.anomaly_maps import class_logits, layer_anomaly_maps, patch_probability_maps
from scipy.ndimage import gaussian_filter
from torch.profiler import ProfilerActivity, profile

from machine import load_line, machine_line
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


def our_pipeline(predictor: AnomalyPredictor, images: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Score images in batches of `batch_size` through the predictor's two steps, as `infer` does."""
    parts = [predictor.predict_prepared(predictor.prepare(images[start:start + batch_size])).scores
             for start in range(0, len(images), batch_size)]
    return np.concatenate(parts)


@dataclass
class Timings:
    """Per-slice wall time, CPU time and minor page faults of each round."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)

    def measure(self, run: Callable[[], np.ndarray], slices: int) -> np.ndarray:
        before, cpu_before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        scores = run()
        wall, cpu, after = time.perf_counter() - start, time.process_time() - cpu_before, \
            resource.getrusage(resource.RUSAGE_SELF)
        self.wall.append(wall / slices)
        self.cpu.append(cpu / slices)
        self.faults.append((after.ru_minflt - before.ru_minflt) / slices)
        return scores


def print_profile(name: str, run: Callable[[], np.ndarray], slices: int, rows: int = 8) -> None:
    """One profiled pass: the operators taking most self CPU time, in ms per slice."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    events = sorted(profiler.key_averages(), key=lambda event: -event.self_cpu_time_total)
    total = sum(event.self_cpu_time_total for event in events) / 1e3 / slices
    print(f"profile {name}: {total:.0f} ms/slice self CPU time in all operators")
    for event in events[:rows]:
        print(f"    {event.key:<52} {event.self_cpu_time_total / 1e3 / slices:8.1f} ms/slice  "
              f"{event.count / slices:6.1f} calls/slice")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-l-14-336")
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, DetectorConfig.batch_size])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print each path's operators by self CPU time")
    args = parser.parse_args()

    print(machine_line("cpu"))
    print(f"before: {load_line()}")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (512, 512), dtype=np.uint8) for _ in range(args.slices)]
    predictor = AnomalyPredictor(DetectorConfig(clip_weights=f"random:{args.preset}", method="ensemble",
                                                image_size=args.image_size, layers=(24,), device="cpu"))
    paths: dict[str, Callable[[], np.ndarray]] = {"reference (batch 1)": lambda: reference_pipeline(predictor, images)}
    for batch_size in args.batch_sizes:
        paths[f"ours, batch {batch_size}"] = lambda size=batch_size: our_pipeline(predictor, images, size)
    reference_pipeline(predictor, images[:1]), our_pipeline(predictor, images[:1], 1)  # warm-up
    timings = {name: Timings() for name in paths}
    scores: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, run in paths.items():
            scores[name] = timings[name].measure(run, args.slices)
    print(f"after:  {load_line()}")
    print(f"random:{args.preset} @{args.image_size}, layer 24, {args.slices} slices x {args.rounds} rounds "
          f"(median), {torch.get_num_threads()} threads")
    reference = timings["reference (batch 1)"]
    print(f"{'path':<22}{'wall s/slice':>13}{'ratio':>7}{'best':>7}{'ratio':>7}{'CPU s/slice':>12}{'ratio':>7}"
          f"{'faults/slice':>13}{'max score diff':>15}")
    for name, timing in timings.items():
        wall, best, cpu = float(np.median(timing.wall)), min(timing.wall), float(np.median(timing.cpu))
        difference = float(np.abs(scores[name] - scores["reference (batch 1)"]).max())
        print(f"{name:<22}{wall:>13.2f}{np.median(reference.wall) / wall:>6.2f}x{best:>7.2f}"
              f"{min(reference.wall) / best:>6.2f}x{cpu:>12.2f}{np.median(reference.cpu) / cpu:>6.2f}x"
              f"{np.median(timing.faults):>13.0f}{difference:>15.1e}")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.profile:
        for name, run in paths.items():
            print_profile(name, run, args.slices)


if __name__ == "__main__":
    main()
