"""The map blur: scipy's gaussian_filter to float precision, and on the CPU map by map without changing a bit."""

from __future__ import annotations

import numpy as np
import torch
from medclip_ad.constants import BLUR_SIGMA, BLUR_TRUNCATE
from medclip_ad.modeling.gaussian_blur import _blur, gaussian_blur
from scipy.ndimage import gaussian_filter


def test_blur_matches_scipy_reflect_on_every_map_of_a_batch() -> None:
    maps = torch.from_numpy(np.random.default_rng(0).random((3, 40, 52), dtype=np.float32))
    blurred = gaussian_blur(maps).numpy()
    for single, expected in zip(maps.numpy(), blurred):
        reference = gaussian_filter(single.astype(np.float64), sigma=BLUR_SIGMA, mode="reflect",
                                    truncate=BLUR_TRUNCATE)
        np.testing.assert_allclose(expected, reference, atol=1e-6)


def test_map_by_map_blur_on_the_cpu_is_bit_identical_to_one_batched_call() -> None:
    maps = torch.from_numpy(np.random.default_rng(1).random((5, 70, 70), dtype=np.float32))
    assert torch.equal(gaussian_blur(maps), _blur(maps, BLUR_SIGMA))
    assert torch.equal(gaussian_blur(maps[2:3])[0], gaussian_blur(maps)[2])
