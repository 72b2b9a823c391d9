"""Pairing masks with images by file name, never by position in a listing.

A mask belongs to the image whose name it carries: the same stem (`12.png` <-> `12.tif`), or the stem
plus one of the suffix conventions published datasets use (`ISIC_0000003_Segmentation.png`,
`000_mask.png`). Sorted-order pairing silently mislabels pixels as soon as names sort differently
(`a.png`, `a0.png` vs `a0_mask.png`, `a_mask.png`), so it is not used anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from medclip_ad.datasets.entries import relative_to_root
from medclip_ad.datasets.notices import warn_dataset
from medclip_ad.errors import UserInputError

# Suffixes after the image stem that mark a mask (compared case-insensitively).
MASK_SUFFIXES: tuple[str, ...] = ("_segmentation", "_mask", "-mask", "_seg", "_gt")

NIFTI_DOUBLE_SUFFIX = ".nii.gz"


def name_key(path: Path) -> str:
    """The name an image or study is known by: file name without extension, or a series folder's name."""
    if path.name.lower().endswith(NIFTI_DOUBLE_SUFFIX):
        return path.name[: -len(NIFTI_DOUBLE_SUFFIX)]
    return path.name if path.is_dir() else path.stem


def _without_mask_suffix(key: str) -> str | None:
    lowered = key.lower()
    for suffix in MASK_SUFFIXES:
        if lowered.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)]
    return None


def pair_masks(dataset: str, images: Iterable[Path], masks: Iterable[Path], mask_dir: Path) -> dict[Path, Path]:
    """Map each image to its mask by name; masks that belong to no image are reported as a warning.

    An exact stem match wins over a suffix match; two masks claiming one image is an error naming both.
    """
    masks = list(masks)
    exact: dict[str, list[Path]] = {}
    suffixed: dict[str, list[Path]] = {}
    for mask in masks:
        key = name_key(mask)
        exact.setdefault(key, []).append(mask)
        stripped = _without_mask_suffix(key)
        if stripped is not None:
            suffixed.setdefault(stripped, []).append(mask)
    pairs: dict[Path, Path] = {}
    for image in images:
        key = name_key(image)
        candidates = exact.get(key) or suffixed.get(key) or []
        if len(candidates) > 1:
            names = ", ".join(sorted(candidate.name for candidate in candidates))
            raise UserInputError(f"{dataset}: several masks for {image} in {mask_dir} ({names}); keep one")
        if candidates:
            pairs[image] = candidates[0]
    unused = sorted(set(masks) - set(pairs.values()))
    if unused:
        more = f" and {len(unused) - 1} more" if len(unused) > 1 else ""
        warn_dataset(f"{dataset}: {len(unused)} mask(s) in {mask_dir} match no image by name, ignored "
                     f"({unused[0].name}{more})")
    return pairs


def require_masks(dataset: str, images: Iterable[Path], pairs: dict[Path, Path], mask_dir: Path) -> None:
    """Every anomalous image of a segmentation set needs its mask; name the first one that has none."""
    missing = [image for image in images if image not in pairs]
    if missing:
        key = name_key(missing[0])
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserInputError(f"{dataset}: no mask for {missing[0]} in {mask_dir}{more}; masks are matched by "
                             f"name: {key}.<ext> or {key}{MASK_SUFFIXES[0]}.<ext>, {key}{MASK_SUFFIXES[1]}.<ext>, ...")


def mask_path_for(pairs: dict[Path, Path], image: Path, root: Path) -> str:
    """The manifest's mask_path for an image: relative to the root, "" when it has no mask."""
    mask = pairs.get(image)
    return relative_to_root(mask, root) if mask is not None else ""
