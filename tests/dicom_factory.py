"""Build DICOM series for tests from one real file, with positions the test chooses.

A real CT file (pydicom's CT_small.dcm) is copied once per slice with its own ImagePositionPatient,
SliceLocation, InstanceNumber and SOPInstanceUID, so the series is as real as its template while the
test controls order, orientation, spacing and pixel values. File names are shuffled on purpose: readers
must order slices by position, never by name.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def template_path() -> Path:
    """pydicom's 128 x 128 CT slice (signed 16-bit, RescaleIntercept -1024)."""
    return Path(get_testdata_file("CT_small.dcm", download=False))


def write_series(
    out_dir: Path,
    n_slices: int,
    *,
    step_mm: float = 2.5,
    orientation: tuple[float, ...] | None = None,
    stored: np.ndarray | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    description: str = "factory series",
    seed: int = 0,
    scramble_instance_numbers: bool = False,
) -> list[Path]:
    """Write `n_slices` copies of the template into `out_dir` under shuffled names; return the paths in
    slice order (slice k sits at the template's position + k * step_mm along the slice normal).

    `stored` optionally replaces the pixels: stored values shaped (columns, rows, n_slices), the layout
    `read_case` returns. `orientation` replaces ImageOrientationPatient (six direction cosines).
    """
    template = pydicom.dcmread(template_path())
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    cosines = np.array(orientation if orientation is not None else template.ImageOrientationPatient, dtype=float)
    normal = np.cross(cosines[:3], cosines[3:])
    origin = np.array(template.ImagePositionPatient, dtype=float)
    series_uid = series_uid or generate_uid()
    names = [f"S{seed}IM{n:05d}" for n in rng.permutation(n_slices) * 7 + 11]
    instance_numbers = rng.permutation(n_slices) + 1 if scramble_instance_numbers else np.arange(n_slices) + 1
    paths: list[Path] = []
    for k in range(n_slices):
        ds = copy.deepcopy(template)
        position = origin + k * step_mm * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in cosines]
        ds.SliceLocation = f"{float(position @ normal):.6f}"
        ds.InstanceNumber = int(instance_numbers[k])
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if stored is not None:
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(template.pixel_array.dtype).tobytes()
        path = out_dir / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def template_stored_volume(n_slices: int) -> np.ndarray:
    """The template's stored pixels repeated on every slice, as (columns, rows, n_slices)."""
    pixels = pydicom.dcmread(template_path()).pixel_array.T
    return np.repeat(pixels[:, :, None], n_slices, axis=2)


def simpleitk_ras_affine(path: Path) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """Reference geometry from SimpleITK: (RAS affine, size, array as (column, row, slice)).

    A folder is read as a series in GDCM's position order; a file on its own. SimpleITK reports LPS
    origin/spacing/direction; flipping the first two world axes gives the RAS affine NIfTI uses.
    """
    import SimpleITK as sitk

    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine, tuple(image.GetSize()), sitk.GetArrayFromImage(image).T
