"""Checks every reader makes before and after decoding, and the one-line error they raise.

Failures a user can cause become a `UserInputError` naming the file and the problem.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medclip_ad import limits
from medclip_ad.errors import UserInputError

# ITK errors start with the C++ source location and a class/address prefix; users need the rest.
_SOURCE_LOCATION = re.compile(r"\.(cxx|hxx|cpp|h):\d+:?$")
_ITK_ERROR_PREFIX = re.compile(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ")


# What reading libraries raise on files that are not what they claim or are cut short.
READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError, IndexError, TypeError, zlib.error)


def fail(path: Path, problem: str, exc: BaseException | None = None) -> UserInputError:
    """The one-line error for `path`, with the library's first line of explanation when there is one."""
    reason = ""
    if exc is not None:
        lines = (_ITK_ERROR_PREFIX.sub("", line.strip()) for line in str(exc).splitlines())
        useful = next((line for line in lines if line and not _SOURCE_LOCATION.search(line)), type(exc).__name__)
        reason = f" ({useful[:160]})"
    return UserInputError(f"{path}: {problem}{reason}")


def check_size(path: Path, shape: Sequence[int]) -> None:
    """Refuse inputs too large to hold, before any pixel is decoded; and empty ones."""
    count = int(np.prod([int(s) for s in shape], dtype=np.int64))
    if count == 0:
        raise fail(path, f"holds no pixels (shape {tuple(int(s) for s in shape)})")
    if count > limits.MAX_VOXELS:
        raise fail(path, f"too large: {count:,} voxels, the limit is {limits.MAX_VOXELS:,}")


def check_not_all_nan(path: Path, array: np.ndarray) -> None:
    """A volume without a single finite value has nothing to look at; partial NaN/Inf is fine."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).any():
        raise fail(path, "every voxel is NaN or infinite")


def spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size in millimetres along each array axis: the lengths of the affine's columns."""
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
