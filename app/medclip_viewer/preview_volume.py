"""A coarse copy of a large volume, shown while the full one loads (progressive display).

Where the browser draws WebGL in software (no GPU: SwiftShader, llvmpipe), NiiVue's per-case upload
and reorientation of a 256x256x120 scan and its map costs about 2 s, so a case would stay black that
long. The viewer first shows a copy reduced by an integer factor along every axis (a 2x2x2 block is one
voxel: an eighth of the work), then the full volume once it is drawn, carrying the crosshair, zoom and
window over. The scan's blocks are averaged (grey levels stay in their units); the map's keep their
highest value, so a small hot spot is not averaged away in the first look.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# The most voxels a preview has; a volume with no more than this is shown at full size at once.
PREVIEW_MAX_VOXELS = 1_000_000


def preview_factor(shape: tuple[int, ...]) -> int:
    """The smallest block edge that brings the volume within PREVIEW_MAX_VOXELS (1: no preview needed)."""
    factor = 1
    while math.prod(-(-size // factor) for size in shape) > PREVIEW_MAX_VOXELS:
        factor += 1
    return factor


def reduce_blocks(volume: np.ndarray, factor: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """`volume` with each factor^3 block reduced to one voxel by `reduce` (np.mean, np.max); edges are
    padded with their last value. Integer volumes stay integers (means rounded)."""
    padding = [(0, -size % factor) for size in volume.shape]
    padded = np.pad(volume, padding, mode="edge")
    blocks = padded.reshape(*(value for size in padded.shape for value in (size // factor, factor)))
    reduced = reduce(blocks, axis=(1, 3, 5))
    if np.issubdtype(volume.dtype, np.integer):
        reduced = np.round(reduced).astype(volume.dtype)
    return reduced


def preview_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """The affine of a block-reduced volume: voxels `factor` times larger, centred on their blocks."""
    scaling = np.diag([factor, factor, factor, 1.0])
    scaling[:3, 3] = (factor - 1) / 2
    return np.asarray(affine, dtype=np.float64) @ scaling
