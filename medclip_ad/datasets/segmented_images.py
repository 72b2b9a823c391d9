"""Datasets published as an image folder beside a mask folder (ISIC, ClinicDB, ColonDB, Kvasir, TN3K, Endo).

In the lesion and polyp sets every image shows the finding, so every image is anomalous and must have
its mask. Endo mixes normal and abnormal frames and is published with a mask for every frame; a frame is
anomalous exactly when its mask has foreground. `colondb+endo` is the medical auxiliary training set.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from medclip_ad.datasets.entries import image_entry
from medclip_ad.datasets.layouts import has_children, list_images, locate_layout, require_images, subfolders
from medclip_ad.datasets.manifest import Manifest, combine_manifests
from medclip_ad.datasets.pairing import mask_path_for, pair_masks, require_masks
from medclip_ad.errors import UserInputError

# Mask pixels at or above this 8-bit value are foreground (JPEG masks carry noise around 0 and 255).
MASK_THRESHOLD: int = 128

ENDO_IMAGES = "images"
ENDO_MASKS = "masks"


def _paired(name: str, source: Path, images_folder: str,
            masks_folder: str) -> tuple[Path, list[Path], dict[Path, Path]]:
    """Layout root, its images, and each image's mask (every image must have one)."""
    root = locate_layout(name, source, has_children(images_folder, masks_folder),
                         f"{images_folder}/ and {masks_folder}/ folders")
    images = list_images(root / images_folder)
    require_images(name, root / images_folder, images)
    mask_dir = root / masks_folder
    pairs = pair_masks(name, images, list_images(mask_dir), mask_dir)
    require_masks(name, images, pairs, mask_dir)
    return root, images, pairs


def all_anomalous(name: str, sources: Sequence[Path], *, images: str, masks: str, defect: str) -> Manifest:
    """Image folder + mask folder, every image anomalous with its mask (paired by name)."""
    root, image_paths, pairs = _paired(name, sources[0], images, masks)
    entries = [image_entry(image, root, name, 1, defect, mask_path_for(pairs, image, root)) for image in image_paths]
    return Manifest.from_entries(root, entries)


isic2016 = partial(all_anomalous, images="ISBI2016_ISIC_Part1_Test_Data",
                   masks="ISBI2016_ISIC_Part1_Test_GroundTruth", defect="lesion")
clinicdb = partial(all_anomalous, images="Original", masks="Ground Truth", defect="polyp")
colondb = partial(all_anomalous, images="images", masks="masks", defect="polyp")
kvasir = partial(all_anomalous, images="images", masks="masks", defect="polyp")
tn3k = partial(all_anomalous, images="test-image", masks="test-mask", defect="nodule")


def endo(name: str, sources: Sequence[Path]) -> Manifest:
    """`images/` + `masks/` with a mask for every frame: empty mask = normal (mask_path ""), else abnormal."""
    root, image_paths, pairs = _paired(name, sources[0], ENDO_IMAGES, ENDO_MASKS)
    entries = []
    for image in image_paths:
        anomalous = _has_foreground(pairs[image])
        mask = mask_path_for(pairs, image, root) if anomalous else ""
        entries.append(image_entry(image, root, name, int(anomalous), "abnormal", mask))
    return Manifest.from_entries(root, entries)


def _has_foreground(mask: Path) -> bool:
    try:
        with Image.open(mask) as handle:
            return bool((np.asarray(handle.convert("L")) >= MASK_THRESHOLD).any())
    except (OSError, UnidentifiedImageError) as error:
        raise UserInputError(f"{mask}: cannot read mask ({error})") from None


def colondb_endo(name: str, sources: Sequence[Path]) -> Manifest:
    """ColonDB (all polyp images, with masks) + only the normal Endo frames, as the published recipe uses."""
    colondb_source, endo_source = _colondb_and_endo_sources(sources)
    polyps = colondb("colondb", [colondb_source])
    endo_all = endo("endo", [endo_source])
    endo_normal = Manifest.from_entries(endo_all.root, [entry for entry in endo_all.entries() if not entry.anomaly])
    return combine_manifests([polyps, endo_normal])


def _colondb_and_endo_sources(sources: Sequence[Path]) -> tuple[Path, Path]:
    """Two sources are (ColonDB, Endo) in that order; one source is a parent holding both by name."""
    if len(sources) == 2:
        return sources[0], sources[1]
    parent = sources[0]
    if not parent.is_dir():
        raise UserInputError(f"{parent}: not a folder (pass the ColonDB and Endo folders, or their parent)")
    children = subfolders(parent)
    colondb_dirs = [child for child in children if "colondb" in child.name.lower()]
    endo_dirs = [child for child in children if "endo" in child.name.lower() and child not in colondb_dirs]
    if len(colondb_dirs) != 1 or len(endo_dirs) != 1:
        raise UserInputError(f"{parent}: expected exactly one sub-folder named like *ColonDB* and one like *Endo* "
                             f"(found {len(colondb_dirs)} and {len(endo_dirs)}); or pass the two folders as "
                             "--source COLONDB ENDO")
    return colondb_dirs[0], endo_dirs[0]
