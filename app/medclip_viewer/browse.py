"""Server-side browsing, confined to the data root the viewer was started with.

Anyone who can reach the viewer can browse, so nothing outside the root may be listed or opened: every
path is resolved (symbolic links followed) and must still lie inside the resolved root. Listings show
folders (a DICOM series is a folder) and NIfTI/image/DICOM files by name, capped in number so a huge
archive cannot stall the page.
"""

from __future__ import annotations

import os
from pathlib import Path

from medclip_ad.errors import UserInputError
from medclip_ad.io.discovery import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES
from medclip_ad.limits import MAX_BROWSE_DEPTH, MAX_BROWSE_ENTRIES

from medclip_viewer.confinement import NOT_AVAILABLE

ROOT_ENTRY = "./"

_OPENABLE_SUFFIXES = NIFTI_SUFFIXES + IMAGE_SUFFIXES + DICOM_SUFFIXES


def resolve_under_root(root: Path, relative: str) -> Path:
    """The real path of `relative` inside `root`; refuses anything that leads outside (.., links, absolute)
    or no longer exists, in the same words, so the answer tells nothing about what lies outside."""
    real_root = root.resolve()
    candidate = (real_root / relative).resolve()
    if (candidate != real_root and real_root not in candidate.parents) or not candidate.exists():
        raise UserInputError(f"{Path(relative).name or relative}: {NOT_AVAILABLE}")
    return candidate


def list_entries(root: Path) -> tuple[list[str], bool]:
    """Openable entries as root-relative POSIX paths (folders end with '/', the root itself is './'),
    in a stable order, and whether the listing was cut at MAX_BROWSE_ENTRIES."""
    real_root = root.resolve()
    entries: list[str] = []
    for folder, subfolders, files in os.walk(real_root):
        here = Path(folder)
        depth = len(here.relative_to(real_root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and _inside(real_root, here / d))
        if depth >= MAX_BROWSE_DEPTH:
            subfolders[:] = []
        for name in subfolders:
            entries.append((here / name).relative_to(real_root).as_posix() + "/")
        for name in sorted(files):
            openable = not name.startswith(".") and name.lower().endswith(_OPENABLE_SUFFIXES)
            if openable and _inside(real_root, here / name):
                entries.append((here / name).relative_to(real_root).as_posix())
        if len(entries) >= MAX_BROWSE_ENTRIES:
            return [ROOT_ENTRY, *sorted(entries[:MAX_BROWSE_ENTRIES])], True
    return [ROOT_ENTRY, *sorted(entries)], False


def _inside(real_root: Path, path: Path) -> bool:
    """Whether a path (after following links) stays inside the root."""
    resolved = path.resolve()
    return resolved == real_root or real_root in resolved.parents
