"""Voxel metrics of volume evaluation: how fast one volume is counted, and what the metrics cost after.

    python benchmarks/bench_voxel_metrics.py [--shape 512 512 100]

A random map over a CT-sized volume, once with a 60 x 60 x 20 lesion mask and once normal. Prints the
machine, voxels per second for each, and the time to compute all five metrics from the histograms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from medclip_ad.evaluation.voxel_metrics import VoxelStatistics

from machine import machine_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 100])
    args = parser.parse_args()
    print(machine_line())
    shape = tuple(args.shape)
    volume_map = np.random.default_rng(0).random(shape, dtype=np.float32)
    lesion = np.zeros(shape, np.uint8)
    centre = [size // 2 for size in shape]
    lesion[centre[0] - 30:centre[0] + 30, centre[1] - 30:centre[1] + 30, max(0, centre[2] - 10):centre[2] + 10] = 1
    statistics = VoxelStatistics(upper=1.0)
    for label, mask in (("with a lesion", lesion), ("normal", np.zeros(shape, np.uint8))):
        start = time.perf_counter()
        statistics.add(volume_map, mask)
        seconds = time.perf_counter() - start
        print(f"{label}: {seconds:.2f} s for {volume_map.size / 1e6:.1f} M voxels "
              f"({volume_map.size / seconds / 1e6:.1f} M voxels/s)")
    start = time.perf_counter()
    statistics.auroc(), statistics.average_precision(), statistics.f1_max()
    statistics.aupro("reference"), statistics.aupro("standard")
    print(f"all five metrics from the histograms: {(time.perf_counter() - start) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
