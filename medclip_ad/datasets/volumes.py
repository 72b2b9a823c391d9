"""Users' own 3-D data: a folder of studies, each a NIfTI file or a DICOM series folder.

Studies sit in `normal/` and/or `abnormal/`; optional mask volumes (NIfTI) in `masks/` are matched by
study name. Only the listing happens here: entries carry `kind: "volume"`, and reading, slicing and
checking the files is the volume path's job, which evaluates them slice by slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from medclip_ad.datasets.entries import volume_entry
from medclip_ad.datasets.layouts import has_any_child, locate_layout
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.notices import warn_dataset
from medclip_ad.datasets.pairing import NIFTI_DOUBLE_SUFFIX, mask_path_for, pair_masks, require_masks
from medclip_ad.errors import UserInputError

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", NIFTI_DOUBLE_SUFFIX)
LABEL_FOLDERS: dict[str, int] = {"normal": 0, "abnormal": 1}


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _is_series_folder(path: Path) -> bool:
    return path.is_dir() and any(child.is_file() and not child.name.startswith(".") for child in path.iterdir())


def list_studies(name: str, folder: Path) -> list[Path]:
    """NIfTI files and non-empty sub-folders (DICOM series), sorted; anything else is reported, not listed."""
    studies, skipped = [], []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        (studies if _is_nifti(child) or _is_series_folder(child) else skipped).append(child)
    if skipped:
        warn_dataset(f"{name}: {len(skipped)} item(s) in {folder} are neither NIfTI files nor DICOM series "
                     f"folders, ignored ({skipped[0].name}{' ...' if len(skipped) > 1 else ''})")
    return studies


def volume_folders(name: str, sources: Sequence[Path]) -> Manifest:
    """`normal/` and/or `abnormal/` studies; when `masks/` exists every abnormal study needs its mask."""
    root = locate_layout(name, sources[0], has_any_child(*LABEL_FOLDERS),
                         "normal/ and/or abnormal/ folders of NIfTI files or DICOM series folders")
    studies = {label: list_studies(name, root / label) if (root / label).is_dir() else [] for label in LABEL_FOLDERS}
    if not any(studies.values()):
        raise UserInputError(f"{root}: no studies (NIfTI files or DICOM series folders) in normal/ or abnormal/")
    mask_dir = root / "masks"
    pairs: dict[Path, Path] = {}
    if mask_dir.is_dir():
        masks = [child for child in sorted(mask_dir.iterdir()) if _is_nifti(child)]
        pairs = pair_masks(name, [study for group in studies.values() for study in group], masks, mask_dir)
        require_masks(name, studies["abnormal"], pairs, mask_dir)
    entries = [volume_entry(study, root, root.name, anomaly, mask_path_for(pairs, study, root) if anomaly else "")
               for label, anomaly in LABEL_FOLDERS.items() for study in studies[label]]
    return Manifest.from_entries(root, entries)
