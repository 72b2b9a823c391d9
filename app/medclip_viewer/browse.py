"""Server-side browsing, confined to the data root the viewer was started with.

Anyone who can reach the viewer can browse, so nothing outside the root may be listed or opened: every
path is resolved (symbolic links followed) and must still lie inside the resolved root. Listings show
folders and NIfTI/image files by name, capped in number so a huge archive cannot stall the page. A DICOM
series is a folder of one file per slice: it is listed once, as its folder with its file count, never
file by file (a CT series is hundreds of files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from medclip_ad.errors import UserInputError
from medclip_ad.io.discovery import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES
from medclip_ad.limits import MAX_BROWSE_DEPTH, MAX_BROWSE_ENTRIES

from medclip_viewer.confinement import NOT_AVAILABLE

ROOT_ENTRY = "./"

_LISTED_FILE_SUFFIXES = NIFTI_SUFFIXES + IMAGE_SUFFIXES


def resolve_under_root(root: Path, relative: str) -> Path:
    """The real path of `relative` inside `root`; refuses anything that leads outside (.., links, absolute)
    or no longer exists, in the same words, so the answer tells nothing about what lies outside."""
    real_root = root.resolve()
    candidate = (real_root / relative).resolve()
    if (candidate != real_root and real_root not in candidate.parents) or not candidate.exists():
        raise UserInputError(f"{Path(relative).name or relative}: {NOT_AVAILABLE}")
    return candidate


@dataclass(frozen=True)
class BrowseListing:
    """Openable entries as root-relative POSIX paths (folders end with '/', the root itself is './'), in
    a stable order; whether the walk stopped at MAX_BROWSE_ENTRIES; and the DICOM files per folder."""

    entries: list[str]
    truncated: bool = False
    dicom_files: dict[str, int] = field(default_factory=dict)

    def label(self, entry: str) -> str:
        """How the entry is listed: a folder of DICOM files says how many it holds."""
        count = self.dicom_files.get(entry)
        return f"{entry} (DICOM, {count} file{'s' if count != 1 else ''})" if count else entry


def list_entries(root: Path) -> BrowseListing:
    """Walk the root (to MAX_BROWSE_DEPTH, up to MAX_BROWSE_ENTRIES entries) for what can be opened."""
    real_root = root.resolve()
    entries: list[str] = []
    dicom_files: dict[str, int] = {}
    for folder, subfolders, files in os.walk(real_root):
        here = Path(folder)
        depth = len(here.relative_to(real_root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and _inside(real_root, here / d))
        if depth >= MAX_BROWSE_DEPTH:
            subfolders[:] = []
        for name in subfolders:
            entries.append((here / name).relative_to(real_root).as_posix() + "/")
        visible = [name for name in sorted(files) if not name.startswith(".") and _inside(real_root, here / name)]
        dicom = [name for name in visible if name.lower().endswith(DICOM_SUFFIXES)]
        if dicom:
            dicom_files[_folder_entry(real_root, here)] = len(dicom)
        for name in visible:
            if name.lower().endswith(_LISTED_FILE_SUFFIXES):
                entries.append((here / name).relative_to(real_root).as_posix())
        if len(entries) >= MAX_BROWSE_ENTRIES:
            return BrowseListing([ROOT_ENTRY, *sorted(entries[:MAX_BROWSE_ENTRIES])], True, dicom_files)
    return BrowseListing([ROOT_ENTRY, *sorted(entries)], False, dicom_files)


def _folder_entry(real_root: Path, folder: Path) -> str:
    relative = folder.relative_to(real_root).as_posix()
    return ROOT_ENTRY if relative == "." else f"{relative}/"


def _inside(real_root: Path, path: Path) -> bool:
    """Whether a path (after following links) stays inside the root."""
    resolved = path.resolve()
    return resolved == real_root or real_root in resolved.parents
