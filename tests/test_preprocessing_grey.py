"""Grey images are resized once, then replicated: the same bytes as resizing their RGB copy."""

from __future__ import annotations

import numpy as np
import pytest
from medclip_ad.inference.preprocessing import as_rgb, resize_rgb, resized_rgb


@pytest.mark.parametrize("shape", [(64, 64), (37, 51), (90, 20, 1), (30, 41, 3), (25, 25, 4)])
@pytest.mark.parametrize("size", [64, 224, 518])
def test_grey_shortcut_gives_the_bytes_of_the_rgb_resize(shape: tuple[int, ...], size: int) -> None:
    image = np.random.default_rng(size).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(resized_rgb(image, size), resize_rgb(as_rgb(image), size))


def test_grey_shortcut_keeps_the_8_bit_check() -> None:
    with pytest.raises(TypeError, match="8-bit"):
        resized_rgb(np.zeros((8, 8), np.uint16), 16)
