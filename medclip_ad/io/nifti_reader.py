"""NIfTI files into a `Scan` as MONAI's `NibabelReader` reads them: the file's own voxel order and affine.

Besides the affine MONAI chooses (the sform when it is set), the header's sform and qform are both kept
with their codes, and its units, so that a map written for the scan carries exactly the input's
geometry: ITK-based readers use the qform, nibabel and FSL the sform, and the two may differ.

The voxels and the affine come from nibabel, as inside MONAI's reader; MONAI itself (and torch with it)
is imported only for a header whose voxel sizes disagree with its transform, which MONAI repairs
(`correct_nifti_header_if_necessary`). Opening an ordinary volume, in the viewer say, stays light.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError

from medclip_ad.io.discovery import CaseSource
from medclip_ad.io.read_checks import (
    READ_ERRORS,
    check_affine,
    check_nifti_declared_sizes,
    check_not_all_nan,
    check_size,
    fail,
    spacing,
)
from medclip_ad.io.scan import Scan

# What nibabel raises on headers it cannot interpret (unsupported data types, impossible dimensions).
NIFTI_ERRORS = (ImageFileError, HeaderDataError, OverflowError, *READ_ERRORS)


def read_nifti(source: CaseSource, volume_index: int | None) -> Scan:
    """A NIfTI volume in the file's own voxel order with the file's affine; one volume of a 4-D file."""
    path = source.location
    check_nifti_declared_sizes(path)
    try:
        image = _as_monai_reads(nib.load(str(path)))
        _check_header(path, _stored_header(path, type(image.header)))
        file_shape = tuple(int(s) for s in image.shape)
    except NIFTI_ERRORS as exc:
        raise fail(path, "not a readable NIfTI file", exc) from exc
    shape = file_shape
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a 3-D volume stored as 4-D
        shape = shape[:-1]
    if len(shape) > 4:
        raise fail(path, f"{len(shape)}-D NIfTI {shape} is not a scalar volume")
    if len(shape) == 4:
        image = _pick_volume(path, image, shape, volume_index)
    volume_shape = (shape[:3] + (1, 1))[:3]  # a 2-D file becomes a one-slice volume
    check_size(path, volume_shape)
    geometry = nifti_geometry(image.header)
    try:
        array = np.asarray(np.asanyarray(image.dataobj), dtype=np.float32).reshape(volume_shape)
    except NIFTI_ERRORS as exc:
        raise fail(path, "truncated or corrupt NIfTI file", exc) from exc
    check_not_all_nan(path, array)
    affine = np.array(image.affine, dtype=np.float64)
    check_affine(path, affine)
    return Scan(
        name=source.name,
        source=path,
        kind="volume",
        array=array,
        affine=affine,
        modality=None,
        slice_axis=2,  # converters (dcm2niix) store slices along the third axis
        spacing=spacing(affine),
        metadata={
            "format": "nifti",
            "file_shape": list(file_shape),
            "volume_index": volume_index if len(shape) == 4 else None,
            **geometry,
        },
    )


def _as_monai_reads(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """The image as MONAI's reader hands it on: unchanged unless its voxel sizes disagree with the column
    lengths of its affine (compared over the header's dim[0] axes, as MONAI compares them), which MONAI
    repairs; only then is MONAI loaded, to repair it the same way."""
    header = image.header
    rank = int(header["dim"][0])
    if rank >= 5:
        return image
    lengths = np.sqrt(np.sum(np.asarray(image.affine, dtype=float)[:rank, :rank] ** 2, axis=0))
    lengths[lengths == 0] = 1.0
    if np.allclose(np.asarray(header.get_zooms())[:rank], lengths):
        return image
    from monai.data.utils import correct_nifti_header_if_necessary

    return correct_nifti_header_if_necessary(image)


def _stored_header(path: Path, header_class: type[nib.Nifti1Header]) -> nib.Nifti1Header:
    """The header as stored: a loaded image's header is already rebuilt from the transform nibabel chose."""
    with ImageOpener(str(path)) as handle:
        return header_class.from_fileobj(handle, check=False)


def _check_header(path: Path, header: nib.Nifti1Header) -> None:
    """Header fields nibabel reads without complaint but no volume can have (nibabel itself repairs a wrong
    header size and zero voxel sizes on loading)."""
    dims = [int(d) for d in header["dim"]]
    if not 1 <= dims[0] <= 7:
        raise fail(path, f"dim[0] is {dims[0]}; a NIfTI file has 1 to 7 dimensions (corrupt header)")
    if any(d < 0 for d in dims[1:dims[0] + 1]):
        raise fail(path, f"negative dimension in {tuple(dims[1:dims[0] + 1])} (corrupt header)")
    # nibabel falls back to another transform when the coded one is broken; the map would then be written
    # with a geometry the input does not declare, so a declared transform must be usable.
    if int(header["sform_code"]) > 0:
        check_affine(path, header.get_sform())
    if int(header["qform_code"]) > 0:
        with np.errstate(invalid="ignore"):
            check_affine(path, header.get_qform())


def _pick_volume(path: Path, image: nib.Nifti1Image, shape: tuple[int, ...], index: int | None) -> nib.Nifti1Image:
    """One 3-D volume of a 4-D file, sliced lazily so the others are never loaded."""
    count = shape[3]
    if index is None:
        raise fail(path, f"4-D NIfTI with {count} volumes; choose one with --volume-index (0 to {count - 1})")
    if not 0 <= index < count:
        raise fail(path, f"--volume-index {index} is out of range: the file has volumes 0 to {count - 1}")
    return image.slicer[:, :, :, index]


def nifti_geometry(header: nib.Nifti1Header) -> dict:
    """Both transforms with their codes, and the space/time units, as plain JSON types."""
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    return {"sform_code": int(sform_code), "qform_code": int(qform_code),
            "sform": None if sform is None else np.asarray(sform, dtype=np.float64).tolist(),
            "qform": None if qform is None else np.asarray(qform, dtype=np.float64).tolist(),
            "xyzt_units": int(header["xyzt_units"])}
