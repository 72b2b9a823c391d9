"""Time the vectorised reference-flavour AUPRO against the loop port on the shared metric fixture.

Run from the repository root: `.venv/bin/python benchmarks/bench_aupro.py`. The fixture is found under
$MEDCLIP_AD_SHARED, else ../shared next to the repository.
"""

import os
import time
from pathlib import Path

import numpy as np
from medclip_ad.evaluation.metrics import aupro

from machine import machine_line
from reference_aupro_loop import reference_aupro_loop

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(os.environ.get("MEDCLIP_AD_SHARED", REPO_ROOT.parent / "shared")) / "fixtures/metrics/metric_case.npz"


def timed(function, *args, **kwargs) -> tuple[float, float]:
    """(value, seconds) of one call."""
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def main() -> None:
    case = np.load(FIXTURE)
    masks, maps = case["masks"], case["maps"]
    fast, fast_s = timed(aupro, masks, maps, flavour="reference")
    slow, slow_s = timed(reference_aupro_loop, masks, maps)
    print(machine_line())
    print(f"fixture: {masks.shape[0]} maps of {masks.shape[1]}x{masks.shape[2]}")
    print(f"expected (fixture):   {float(case['pixel_aupro_reference']):.12f}")
    print(f"vectorised reference: {fast:.12f} in {fast_s:.3f} s")
    print(f"loop port:            {slow:.12f} in {slow_s:.3f} s")
    print(f"speed-up: {slow_s / fast_s:.1f}x, |difference| = {abs(fast - slow):.2e}")


if __name__ == "__main__":
    main()
