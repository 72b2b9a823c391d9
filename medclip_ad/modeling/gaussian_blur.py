"""Gaussian smoothing of anomaly maps with scipy's border convention, batched in torch.

scipy.ndimage.gaussian_filter (mode 'reflect', truncate 4) is what the published numbers used. Its
'reflect' repeats the edge sample (d c b a | a b c d); torch's 'reflect' padding does not, so the
padding is built here by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medclip_ad.constants import BLUR_SIGMA, BLUR_TRUNCATE


def gaussian_kernel(sigma: float, truncate: float = BLUR_TRUNCATE) -> torch.Tensor:
    """The normalised 1-D kernel scipy uses: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _pad_symmetric(maps: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    size = maps.shape[dim]
    if radius > size:
        raise ValueError(f"map side {size} is smaller than the blur radius {radius}")
    before = maps.narrow(dim, 0, radius).flip(dim)
    after = maps.narrow(dim, size - radius, radius).flip(dim)
    return torch.cat([before, maps, after], dim=dim)


def gaussian_blur(maps: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Blur a batch of maps (B, H, W) separably, matching scipy's gaussian_filter to float precision.

    On the CPU the maps go one at a time: a 518 x 518 map and its padded copies stay in the core's L2
    cache, eight at once do not, and the batched call was 6x slower per map (22 against 3.7 ms
    at 2 threads, README Performance). Each row is convolved on its own either way, so the result
    is the same to the bit (tests/test_gaussian_blur.py).
    """
    if maps.device.type == "cpu" and maps.shape[0] > 1:
        return torch.cat([_blur(single, sigma) for single in maps.split(1)])
    return _blur(maps, sigma)


def _blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel = gaussian_kernel(sigma).to(device=maps.device, dtype=maps.dtype)
    radius = kernel.numel() // 2
    batch, height, width = maps.shape
    rows = _pad_symmetric(maps, radius, dim=2).reshape(batch * height, 1, -1)
    maps = F.conv1d(rows, kernel.view(1, 1, -1)).reshape(batch, height, width)
    columns = _pad_symmetric(maps.transpose(1, 2), radius, dim=2).reshape(batch * width, 1, -1)
    return F.conv1d(columns, kernel.view(1, 1, -1)).reshape(batch, width, height).transpose(1, 2).contiguous()
