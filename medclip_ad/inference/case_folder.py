"""A case's output folder, made to appear whole or not at all.

Everything of a case is written into a hidden staging folder beside the final one and renamed into
place at the end, so a crash, a bad input or Ctrl-C never leaves a half-written case, and an existing
case is replaced only when the user asked for it (`--overwrite`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medclip_ad.errors import UserInputError
from medclip_ad.io.writers import check_output_folder
from medclip_ad.output_files import SCORES_FILE
from medclip_ad.io.atomic import FOLDER_MODE, sync_folder


def check_case_folder_free(out_dir: Path, case: str, overwrite: bool) -> None:
    """Refuse up front, before any work, to replace an existing case silently, or a file at all."""
    final = out_dir / case
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise UserInputError(f"{final}: is a {'symbolic link' if final.is_symlink() else 'file'}, not a case folder; "
                             "refusing to replace it (remove it or choose another --out)")
    if final.exists() and not overwrite:
        raise UserInputError(f"{final}: output case folder already exists (pass --overwrite to replace it, "
                             f"or --resume to skip finished cases)")


def case_folder_complete(out_dir: Path, case: str) -> bool:
    """Whether a case was finished by an earlier run (folders appear whole, with scores.json written last)."""
    return (Path(out_dir) / case / SCORES_FILE).is_file()


@contextmanager
def staged_case_folder(out_dir: Path, case: str, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes `out_dir/case`, on any error it disappears."""
    check_case_folder_free(out_dir, case, overwrite)
    check_output_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{case}.", suffix=".partial", dir=out_dir))
    staging.chmod(FOLDER_MODE)
    try:
        yield staging
        final = out_dir / case
        retired = None
        if final.exists():
            retired = final.with_name(f".{case}.replaced-{os.getpid()}")
            final.rename(retired)
        staging.rename(final)
        sync_folder(out_dir)
        if retired is not None:
            shutil.rmtree(retired)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
