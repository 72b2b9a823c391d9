"""Write outputs so that they appear whole or not at all, and volume maps exactly on their scan.

Every file goes through `medclip_ad.io.atomic.atomic_write`, so a crash, a power cut, a full disk or a
bug mid-write never leaves a half-written file under the real name.

Volume maps are written with nibabel directly rather than MONAI's `NibabelWriter`: that writer squeezes
(or pads) trailing singleton dimensions, so a one-slice volume could not keep the scan's shape, and it
always marks the affine as scanner-based; here the shape is the scan's, and a NIfTI input's sform and
qform (matrices and codes, which may differ) and its units are copied as they were.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from medclip_ad.errors import UserInputError
from medclip_ad.io.atomic import atomic_write
from medclip_ad.io.scan import Scan

# NIfTI xform code for scanner-anatomical coordinates: what a map from DICOM (or without codes) gets.
SCANNER_XFORM_CODE: int = 1


def check_output_folder(out_dir: Path) -> None:
    """Refuse, before any work, an output folder that cannot be one: an existing file, a path below a file, or
    a place without write permission."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"{out_dir}: --out must be a folder, and this is a file")
    ancestor = out_dir
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(f"{out_dir}: --out cannot be created: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserInputError(f"{out_dir}: --out cannot be written (no permission in {ancestor})")


def check_output_file(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output file that exists (unless `overwrite`) or cannot be a file."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{path}: --out names an existing folder; it must be a file path")
    if path.exists() and not overwrite:
        raise UserInputError(f"{path}: already exists (pass --overwrite to replace it)")
    check_output_folder(path.parent)


def write_volume_map(map_volume: np.ndarray, scan: Scan, path: Path, dtype: type = np.float32) -> None:
    """Save a map of a volume scan (float32, or `dtype`: uint8 for masks) as NIfTI with exactly the scan's shape
    and affine.

    The map is not rescaled in any way (maps are comparable across cases only if never normalised).
    """
    if scan.kind != "volume" or scan.affine is None:
        raise ValueError(f"{scan.name}: a volume map needs a volume scan with an affine, got a {scan.kind}")
    data = np.asarray(map_volume, dtype=dtype)
    if data.shape != scan.array.shape:
        raise ValueError(f"{scan.name}: map shape {data.shape} differs from the scan's {scan.array.shape}")
    affine = np.asarray(scan.affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine)
    if scan.metadata.get("format") == "nifti":
        _copy_nifti_geometry(image, scan.metadata)
    else:
        image.set_sform(affine, code=SCANNER_XFORM_CODE)
        image.set_qform(affine, code=SCANNER_XFORM_CODE)
    image.header.set_data_dtype(dtype)
    with atomic_write(path) as temporary:
        nib.save(image, temporary)


def _copy_nifti_geometry(image: nib.Nifti1Image, metadata: dict) -> None:
    """The input's sform and qform, each with its own code (unset ones stay unset), and its units."""
    for name, setter in (("sform", image.set_sform), ("qform", image.set_qform)):
        matrix = metadata.get(name)
        code = int(metadata.get(f"{name}_code") or 0)
        setter(None if matrix is None else np.asarray(matrix, dtype=np.float64), code=code)
    image.header["xyzt_units"] = int(metadata.get("xyzt_units", 0))


def write_png(path: Path, rgb_uint8: np.ndarray) -> None:
    """Save an (H, W, 3) or (H, W) uint8 image as PNG."""
    array = np.asarray(rgb_uint8)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"{path}: PNG needs (H, W) or (H, W, 3) uint8, got {array.shape} {array.dtype}")
    image = Image.fromarray(np.ascontiguousarray(array))
    with atomic_write(path) as temporary:
        image.save(temporary, format="PNG")


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save an array as .npy (no pickled objects, so it loads with `allow_pickle=False`)."""
    data = np.asarray(array)
    with atomic_write(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, data, allow_pickle=False)


def write_json(path: Path, obj: Any) -> None:
    """Save `obj` as indented JSON; numpy values and paths are converted, NaN/Inf are refused.

    The text is built before anything is written, so an unserialisable value leaves no file behind.
    """
    text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n"
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _json_default(value: Any) -> Any:
    """Plain-JSON form of the non-JSON types outputs naturally contain."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
