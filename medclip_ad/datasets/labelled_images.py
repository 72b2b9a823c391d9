"""Datasets labelled per image, not per pixel: yes/no folders, a label table, and users' own folders.

BrainMRI and Br35H are published as `yes/` (tumour) and `no/` folders, HeadCT as numbered PNGs with a
`labels.csv`; the generic `folder` layout (`normal/`, `abnormal/`, optional `masks/`) serves users'
own data with the same conventions.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Sequence

from medclip_ad.datasets.entries import image_entry
from medclip_ad.datasets.layouts import (
    has_any_child,
    has_children,
    list_images,
    locate_layout,
    read_csv_text,
    require_images,
)
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.pairing import mask_path_for, pair_masks, require_masks
from medclip_ad.errors import UserInputError

HEADCT_IMAGES = "head_ct"
HEADCT_LABELS = "labels.csv"
HEADCT_COLUMNS = ("id", "hemorrhage")


def yes_no_folders(name: str, sources: Sequence[Path], *, defect: str) -> Manifest:
    """`yes/` anomalous, `no/` normal (BrainMRI, Br35H); other folders such as Br35H's unlabelled
    `pred/` are not part of the evaluation set and are left out."""
    root = locate_layout(name, sources[0], has_children("yes", "no"), "yes/ and no/ folders of images")
    entries = []
    for folder, anomaly in (("no", 0), ("yes", 1)):
        images = list_images(root / folder)
        require_images(name, root / folder, images)
        entries += [image_entry(image, root, name, anomaly, defect) for image in images]
    return Manifest.from_entries(root, entries)


brain_tumour_folders = partial(yes_no_folders, defect="tumor")


def headct(name: str, sources: Sequence[Path]) -> Manifest:
    """Numbered PNGs (`000.png`) labelled by `labels.csv` rows (`id, hemorrhage`), joined by number."""
    root = locate_layout(name, sources[0], has_children(HEADCT_LABELS, HEADCT_IMAGES),
                         f"{HEADCT_LABELS} beside a {HEADCT_IMAGES}/ folder of PNGs")
    image_dir = _headct_image_folder(root / HEADCT_IMAGES)
    labels = _read_headct_labels(root / HEADCT_LABELS)
    images: dict[int, Path] = {}
    for image in list_images(image_dir):
        if not image.stem.isdigit():
            raise UserInputError(f"{image}: HeadCT images are named by their labels.csv id (e.g. 007.png)")
        images[int(image.stem)] = image
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise UserInputError(f"{images[unlabelled[0]]}: no row for id {unlabelled[0]} in {root / HEADCT_LABELS}")
    missing = sorted(set(labels) - set(images))
    if missing:
        raise UserInputError(f"{root / HEADCT_LABELS}: id {missing[0]} has no image in {image_dir}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    entries = [image_entry(images[number], root, name, labels[number], "hemorrhage") for number in sorted(images)]
    return Manifest.from_entries(root, entries)


def _headct_image_folder(folder: Path) -> Path:
    """The Kaggle archive nests the PNGs as head_ct/head_ct/; accept either level."""
    nested = folder / HEADCT_IMAGES
    return nested if nested.is_dir() and not list_images(folder) else folder


def _read_headct_labels(path: Path) -> dict[int, int]:
    with read_csv_text(path) as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(cell.strip() for cell in rows[0]) != HEADCT_COLUMNS:
        raise UserInputError(f"{path}: expected the header \"{', '.join(HEADCT_COLUMNS)}\"")
    labels: dict[int, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if len(cells) != 2 or not cells[0].isdigit() or cells[1] not in ("0", "1"):
            raise UserInputError(f"{path}: line {line}: expected \"<id>, <0 or 1>\", got {', '.join(row)!r}")
        labels[int(cells[0])] = int(cells[1])
    return labels


def labelled_folders(name: str, sources: Sequence[Path]) -> Manifest:
    """Users' own data: `normal/` and/or `abnormal/`, optional `masks/` (by name) for the abnormal images.

    When `masks/` exists every abnormal image must have a mask, so pixel metrics are never computed
    against silently missing ground truth; without `masks/` the set has image labels only. A mask named
    like a normal image is ignored: the folder, not the mask, says what is normal.
    """
    root = locate_layout(name, sources[0], has_any_child("normal", "abnormal"),
                         "normal/ and/or abnormal/ folders, optional masks/")
    cls_name = root.name
    normal = list_images(root / "normal") if (root / "normal").is_dir() else []
    abnormal = list_images(root / "abnormal") if (root / "abnormal").is_dir() else []
    require_images(name, root, normal + abnormal)
    mask_dir = root / "masks"
    pairs: dict[Path, Path] = {}
    if mask_dir.is_dir():
        pairs = pair_masks(name, normal + abnormal, list_images(mask_dir), mask_dir)
        require_masks(name, abnormal, pairs, mask_dir)
    entries = [image_entry(image, root, cls_name, 0, "anomaly") for image in normal]
    entries += [image_entry(image, root, cls_name, 1, "anomaly", mask_path_for(pairs, image, root))
                for image in abnormal]
    return Manifest.from_entries(root, entries)
