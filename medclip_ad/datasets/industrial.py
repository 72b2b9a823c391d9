"""The industrial benchmarks the published prompts are trained on: MVTec AD and VisA.

AnomalyCLIP trains MVTec-evaluated prompts on VisA and all others on MVTec AD's test split, so both are
prepared with their train and test splits as published.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from medclip_ad.datasets.entries import NORMAL_SPECIE, image_entry, relative_to_root
from medclip_ad.datasets.layouts import has_children, list_images, locate_layout, read_csv_text, subfolders
from medclip_ad.datasets.manifest import Manifest, ManifestEntry
from medclip_ad.datasets.pairing import mask_path_for, pair_masks, require_masks
from medclip_ad.errors import UserInputError

VISA_SPLIT_CSV = "split_csv/1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")
VISA_LABELS = {"normal": 0, "anomaly": 1}
VISA_DEFECT = "anomaly"


def _mvtec_classes(folder: Path) -> list[Path]:
    return [child for child in subfolders(folder) if (child / "test").is_dir() and (child / "ground_truth").is_dir()]


def mvtec(name: str, sources: Sequence[Path]) -> Manifest:
    """`<class>/test/<defect>/` (`good` = normal) with masks in `<class>/ground_truth/<defect>/` by name;
    `<class>/train/good/` becomes the train split."""
    root = locate_layout(name, sources[0], lambda folder: bool(_mvtec_classes(folder)),
                         "<class>/test/<defect>/ and <class>/ground_truth/<defect>/ folders")
    test: list[ManifestEntry] = []
    train: list[ManifestEntry] = []
    for class_dir in _mvtec_classes(root):
        cls_name = class_dir.name
        for defect_dir in subfolders(class_dir / "test"):
            images = list_images(defect_dir)
            if defect_dir.name == NORMAL_SPECIE:
                test += [image_entry(image, root, cls_name, 0, NORMAL_SPECIE) for image in images]
                continue
            mask_dir = class_dir / "ground_truth" / defect_dir.name
            pairs = pair_masks(name, images, list_images(mask_dir), mask_dir)
            require_masks(name, images, pairs, mask_dir)
            test += [image_entry(image, root, cls_name, 1, defect_dir.name, mask_path_for(pairs, image, root))
                     for image in images]
        train_dir = class_dir / "train" / NORMAL_SPECIE
        if train_dir.is_dir():
            train += [image_entry(image, root, cls_name, 0, NORMAL_SPECIE) for image in list_images(train_dir)]
    return Manifest.from_entries(root, test, train)


def visa(name: str, sources: Sequence[Path]) -> Manifest:
    """Rows of `split_csv/1cls.csv` (object, split, label, image, mask), paths relative to the VisA root;
    the csv pairs each anomalous image with its mask, and every listed file must exist."""
    root = locate_layout(name, sources[0], has_children(VISA_SPLIT_CSV), VISA_SPLIT_CSV)
    csv_path = root / VISA_SPLIT_CSV
    with read_csv_text(csv_path) as handle:
        reader = csv.DictReader(handle)
        missing_columns = [column for column in VISA_COLUMNS if column not in (reader.fieldnames or [])]
        if missing_columns:
            raise UserInputError(f"{csv_path}: missing column(s) {', '.join(missing_columns)}")
        rows = list(reader)
    splits: dict[str, list[ManifestEntry]] = {"train": [], "test": []}
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}: line {line}"
        split, label = row["split"].strip(), row["label"].strip()
        if split not in splits or label not in VISA_LABELS:
            raise UserInputError(f"{where}: expected split train/test and label normal/anomaly, "
                                 f"got {split!r}, {label!r}")
        image = _listed_file(root, row["image"], where)
        mask = ""
        if VISA_LABELS[label]:
            if not row["mask"].strip():
                raise UserInputError(f"{where}: anomalous image {image} has no mask")
            mask = relative_to_root(_listed_file(root, row["mask"], where), root)
        splits[split].append(image_entry(image, root, row["object"].strip(), VISA_LABELS[label], VISA_DEFECT, mask))
    return Manifest.from_entries(root, splits["test"], splits["train"])


def _listed_file(root: Path, listed: str, where: str) -> Path:
    path = root / listed.strip()
    if not path.is_file():
        raise UserInputError(f"{where}: {path} not found")
    return path
