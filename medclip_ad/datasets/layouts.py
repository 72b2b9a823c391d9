"""Finding a dataset's files on disk: where its layout starts inside a download, and which images it has.

Downloads are often nested one or two folders deep (archives unpack into `archive/<name>/...`), so the
layout root is searched for instead of assumed. Listings are sorted for reproducible manifests; nothing
depends on that order for pairing (see `pairing`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Sequence

from medclip_ad.errors import UserInputError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

# How many folder levels below --source the expected layout may start.
MAX_SEARCH_DEPTH: int = 2

DATASETS_DOC = "docs/datasets.md"


def has_children(*names: str) -> Callable[[Path], bool]:
    """Layout test: the folder holds all these sub-paths (folders or files)."""
    return lambda folder: all((folder / name).exists() for name in names)


def has_any_child(*names: str) -> Callable[[Path], bool]:
    """Layout test: the folder holds at least one of these sub-folders."""
    return lambda folder: any((folder / name).is_dir() for name in names)


def locate_layout(dataset: str, source: Path, matches: Callable[[Path], bool], expected: str) -> Path:
    """The shallowest folder at or below `source` whose contents match the dataset's layout.

    Two matches at the same depth are an error: guessing would silently pick the wrong copy.
    """
    if not source.is_dir():
        raise UserInputError(f"{source}: not a folder (--source for {dataset} must be the downloaded folder)")
    level = [source]
    for _ in range(MAX_SEARCH_DEPTH + 1):
        found = [folder for folder in level if matches(folder)]
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(str(folder) for folder in sorted(found))
            raise UserInputError(f"{source}: several copies of the {dataset} layout ({listed}); "
                                 "pass the one to use as --source")
        level = sorted(child for folder in level for child in subfolders(folder))
    raise UserInputError(f"{source}: no {dataset} layout found (expected {expected}; see {DATASETS_DOC})")


def subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted."""
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def list_images(folder: Path) -> list[Path]:
    """Visible image files of a folder (by extension, any case), sorted; a missing folder is a user error."""
    if not folder.is_dir():
        raise UserInputError(f"{folder}: folder not found")
    return sorted(child for child in folder.iterdir()
                  if child.suffix.lower() in IMAGE_SUFFIXES and not child.name.startswith(".") and child.is_file())


def require_images(dataset: str, folder: Path, images: Sequence[Path]) -> None:
    """An empty image folder is almost always a wrong --source; say so instead of writing an empty manifest."""
    if not images:
        raise UserInputError(f"{folder}: no images found for {dataset} "
                             f"(extensions {', '.join(sorted(IMAGE_SUFFIXES))})")


def read_csv_text(path: Path) -> io.StringIO:
    """A dataset's CSV file as text for the `csv` module; it must be UTF-8 (a byte-order mark is fine).

    A file in another encoding (Latin-1 from a spreadsheet, UTF-16) is refused with the offending byte,
    never guessed at: a wrong guess would silently change labels.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                             f"save it as UTF-8 (CSV UTF-8 in spreadsheet programs)") from None
    return io.StringIO(text, newline="")
