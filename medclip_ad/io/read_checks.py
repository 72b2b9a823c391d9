"""Checks every reader makes before and after decoding, and the one-line error they raise.

Failures a user can cause become a `UserInputError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medclip_ad import limits
from medclip_ad.errors import UserInputError

# ITK errors start with the C++ source location and a class/address prefix; users need the rest.
_SOURCE_LOCATION = re.compile(r"\.(cxx|hxx|cpp|h):\d+:?$")
_ITK_ERROR_PREFIX = re.compile(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\): ")


_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540
_DICOM_PREAMBLE_BYTES = 128
# 'DICM', then the (0002,0000) group length element: tag, VR 'UL', length 4, value.
_DICOM_META_PREFIX_BYTES = 16
_DEFLATED_TRANSFER_SYNTAX = b"1.2.840.10008.1.2.1.99"
_INFLATE_CHUNK = 2**20

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


def check_nifti_declared_sizes(path: Path) -> None:
    """Refuse a NIfTI file whose header declares more than the file can hold, before nibabel reads it.

    nibabel reads every header extension (everything up to `vox_offset`) into memory, and inflates a
    .nii.gz as far as the header asks: a small file declaring gigabytes is refused here from its
    first bytes. An uncompressed file must hold what it declares; a compressed one may declare at
    most MAX_INFLATE_RATIO times its size (or MIN_INFLATE_CHECKED_BYTES, whichever is more).
    """
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as handle:
            head = handle.read(_NIFTI2_HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise fail(path, "not a readable NIfTI file", exc) from exc
    declared = _nifti_declared_bytes(head)
    if declared is None:
        return  # not a NIfTI header: nibabel's own error names the problem
    header_bytes, data_bytes = declared
    if header_bytes > limits.MAX_NIFTI_HEADER_BYTES:
        raise fail(path, f"declares {header_bytes:,} bytes of header extensions (vox_offset), the limit is "
                         f"{limits.MAX_NIFTI_HEADER_BYTES:,}")
    file_bytes = path.stat().st_size
    total = header_bytes + data_bytes
    if path.name.lower().endswith(".gz"):
        if total > max(file_bytes * limits.MAX_INFLATE_RATIO, limits.MIN_INFLATE_CHECKED_BYTES):
            raise fail(path, f"declares {total:,} bytes, more than {limits.MAX_INFLATE_RATIO} times its compressed "
                             f"size of {file_bytes:,} (a compression bomb or a corrupt header)")
    elif total > file_bytes:
        raise fail(path, f"truncated NIfTI file (the header declares {total:,} bytes, the file holds {file_bytes:,})")


def _nifti_declared_bytes(head: bytes) -> tuple[int, int] | None:
    """(bytes before the voxels, bytes of voxels) a NIfTI-1 or NIfTI-2 header declares; None if not one."""
    for order in "<>":
        if len(head) >= _NIFTI1_HEADER_BYTES and struct.unpack(f"{order}i", head[:4])[0] == _NIFTI1_HEADER_BYTES:
            dims = struct.unpack(f"{order}8h", head[40:56])
            bitpix = struct.unpack(f"{order}h", head[72:74])[0]
            vox_offset = int(struct.unpack(f"{order}f", head[108:112])[0])
        elif len(head) >= _NIFTI2_HEADER_BYTES and struct.unpack(f"{order}i", head[:4])[0] == _NIFTI2_HEADER_BYTES:
            bitpix = struct.unpack(f"{order}h", head[14:16])[0]
            dims = struct.unpack(f"{order}8q", head[16:80])
            vox_offset = struct.unpack(f"{order}q", head[168:176])[0]
        else:
            continue
        rank = min(max(int(dims[0]), 0), 7)
        voxels = int(np.prod([max(int(n), 1) for n in dims[1:rank + 1]], dtype=object)) if rank else 0
        return max(vox_offset, 0), voxels * max(int(bitpix), 0) // 8
    return None


def check_deflated_dicom(path: Path) -> None:
    """Refuse a deflated-transfer-syntax DICOM file that inflates past the limits, counting as it streams.

    pydicom inflates such a file whole, in memory, before any size can be checked; here the deflate
    stream is run through without keeping it, so a bomb costs CPU for a moment, never memory.
    """
    with open(path, "rb") as handle:
        handle.seek(_DICOM_PREAMBLE_BYTES)
        meta_start = handle.read(_DICOM_META_PREFIX_BYTES)
        if len(meta_start) < _DICOM_META_PREFIX_BYTES or meta_start[:8] != b"DICM\x02\x00\x00\x00":
            return
        meta_length = struct.unpack("<I", meta_start[12:16])[0]
        meta = handle.read(meta_length)
        if _DEFLATED_TRANSFER_SYNTAX not in meta:
            return
        file_bytes = path.stat().st_size
        allowed = min(limits.MAX_INFLATED_DICOM_BYTES,
                      max(file_bytes * limits.MAX_INFLATE_RATIO, limits.MIN_INFLATE_CHECKED_BYTES))
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = 0
        while pending := handle.read(_INFLATE_CHUNK):
            while pending:
                try:
                    inflated += len(inflater.decompress(pending, _INFLATE_CHUNK))
                except zlib.error:
                    return  # corrupt: pydicom's own error names the problem
                if inflated > allowed:
                    raise fail(path, f"deflated DICOM inflates to more than {allowed:,} bytes (the file holds "
                                     f"{file_bytes:,}; a compression bomb)")
                pending = inflater.unconsumed_tail
# The voxel axes of an affine must span space: |det| over the product of the axis lengths is the volume
# of the parallelepiped of unit axes (1 when orthogonal); below this they are as good as parallel.
_MIN_AXIS_INDEPENDENCE = 1e-6


def check_affine(path: Path, affine: np.ndarray) -> None:
    """Refuse geometry no map can be placed with: NaN or infinite entries, zero voxel sizes, parallel axes.

    Checked right after reading, so such a scan costs no inference and fails with its own name.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise fail(path, "the voxel-to-world affine holds NaN or infinite values (broken geometry header)")
    lengths = np.linalg.norm(matrix[:3, :3], axis=0)
    if (lengths == 0).any() or abs(np.linalg.det(matrix[:3, :3])) <= _MIN_AXIS_INDEPENDENCE * np.prod(lengths):
        raise fail(path, "the voxel-to-world affine is singular (a zero voxel size or parallel axes in the "
                         "geometry header)")
