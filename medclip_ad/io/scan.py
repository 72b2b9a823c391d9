"""What a reader hands to inference: one case's pixels, geometry and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np


@dataclass
class Scan:
    """One case: a 2-D image, or a volume (one DICOM series or one NIfTI file).

    `array` keeps the stored values (after DICOM rescale slope/intercept): images are (H, W) or (H, W, 3)
    in the file's row/column order; volumes are (I, J, K) float32 in the voxel order of `affine`, which
    maps voxel indices to world millimetres in MONAI's convention (RAS). Intensity mapping to 8 bits
    happens later, in `medclip_ad.io.intensity`, so readers never lose information.
    """

    name: str
    source: Path
    kind: Literal["image", "volume"]
    array: np.ndarray
    affine: np.ndarray | None = None
    modality: str | None = None
    slice_axis: int = 2
    spacing: tuple[float, ...] = ()
    metadata: dict = field(default_factory=dict)
