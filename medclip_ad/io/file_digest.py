"""Content hashes of files, recorded in provenance so a result names the exact bytes it used.

Kept free of torch so the commands that hash inputs (calibration, result provenance) can check a user's
files before the model stack is imported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """The file's sha256 in hex, read in chunks (CLIP weights files are ~900 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
