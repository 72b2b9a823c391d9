"""An existing AnomalyCLIP meta.json as a prepare-data source.

The reference code's meta files use the same format; converting one records its root explicitly and
checks that every listed image and mask exists, so a stale meta file fails here and not mid-training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from medclip_ad.datasets.manifest import SPLITS, Manifest
from medclip_ad.errors import UserInputError


def meta_json(name: str, sources: Sequence[Path]) -> Manifest:
    """Load the meta.json (entries relative to its folder unless it has a root) and verify its files."""
    source = sources[0]
    if not source.is_file():
        raise UserInputError(f"{source}: not a file (--source for {name} is the meta.json itself)")
    manifest = Manifest.load(source)
    missing = [path for split in SPLITS for entry in manifest.entries(split)
               for path in (manifest.absolute(entry).img_path, manifest.absolute(entry).mask_path)
               if path and not Path(path).exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserInputError(f"{source}: lists {missing[0]}, which does not exist{more}")
    return manifest
