"""Turning files found on disk into manifest entries: paths relative to the dataset root, label names."""

from __future__ import annotations

import os
from pathlib import Path

from medclip_ad.datasets.manifest import ManifestEntry

# specie_name of normal entries, as in AnomalyCLIP's meta files (MVTec's `good` folders).
NORMAL_SPECIE = "good"


def relative_to_root(path: Path, root: Path) -> str:
    """Manifest path of a file: relative to the dataset root, with forward slashes on every platform."""
    return Path(os.path.relpath(path, root)).as_posix()


def image_entry(image: Path, root: Path, cls_name: str, anomaly: int, defect: str, mask: str = "") -> ManifestEntry:
    """One 2-D image; `defect` names the finding of anomalous images, normal ones are `good`."""
    return ManifestEntry(img_path=relative_to_root(image, root), mask_path=mask, cls_name=cls_name,
                         specie_name=defect if anomaly else NORMAL_SPECIE, anomaly=anomaly)


def volume_entry(study: Path, root: Path, cls_name: str, anomaly: int, mask: str = "") -> ManifestEntry:
    """One study (a NIfTI file or a DICOM series folder); read and sliced later by the volume path."""
    return ManifestEntry(img_path=relative_to_root(study, root), mask_path=mask, cls_name=cls_name,
                         specie_name="anomaly" if anomaly else NORMAL_SPECIE, anomaly=anomaly, kind="volume")
