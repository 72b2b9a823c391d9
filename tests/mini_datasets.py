"""Small generated datasets in the published folder layouts (a few images each, not the real counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 48


def _pair(rng: np.random.Generator, anomalous: bool) -> tuple[np.ndarray, np.ndarray]:
    image = (rng.random((SIDE, SIDE, 3)) * 60 + 90).astype(np.uint8)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    if anomalous:
        top, left = rng.integers(4, SIDE - 20, size=2)
        image[top:top + 14, left:left + 14] = (250, 40, 40)
        mask[top:top + 14, left:left + 14] = 255
    return image, mask


def make_kvasir(root: Path, count: int = 4, seed: int = 0) -> Path:
    """Kvasir-SEG: images/ and masks/ with the same file names; every image is a polyp."""
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        image, mask = _pair(rng, anomalous=True)
        Image.fromarray(image).save(root / "images" / f"cju{index:03d}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"cju{index:03d}.jpg", quality=95)
    return root


def make_endo(root: Path, normal: int = 3, anomalous: int = 3, seed: int = 1) -> Path:
    """Endo: images/ and masks/, one mask per image; an empty mask marks a normal image."""
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for index in range(normal + anomalous):
        image, mask = _pair(rng, anomalous=index >= normal)
        Image.fromarray(image).save(root / "images" / f"endo_{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"endo_{index}.png")
    return root


def make_brainmri(root: Path, yes: int = 3, no: int = 3, seed: int = 2) -> Path:
    """Kaggle brain tumour MRI: yes/ (tumour) and no/ folders, image labels only."""
    rng = np.random.default_rng(seed)
    for label, count in (("yes", yes), ("no", no)):
        (root / label).mkdir(parents=True)
        for index in range(count):
            image, _ = _pair(rng, anomalous=label == "yes")
            Image.fromarray(image[:, :, 0]).save(root / label / f"{label.upper()}{index}.jpg", quality=95)
    return root
