"""Files and folders that appear whole or not at all: the one way this package writes anything.

A file is written under a hidden temporary name in its destination folder, flushed to disk, given the
usual mode and renamed into place (`os.replace`, atomic on POSIX and Windows); the folder's entry is
flushed too. Standard library only, so light modules (manifests, checkpoints, downloads) use it as well.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What `open()` and `mkdir()` would give (0644 and 0755 under the usual umask), not tempfile's 0600/0700.
FILE_MODE: int = 0o666 & ~_umask()
FOLDER_MODE: int = 0o777 & ~_umask()


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the platform can."""
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success flush and rename it to `path`, on failure delete it.

    The temporary name keeps the destination's suffixes (`.nii.gz`, `.png`) because libraries pick the
    format from them, and starts with a dot so directory listings and globs for outputs skip it. The
    destination folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    temporary = path.with_name(f".{stem}.{secrets.token_hex(4)}.partial{suffixes}")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
        sync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
