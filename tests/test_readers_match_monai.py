"""The readers call nibabel, ITK and Pillow directly (so reading a case never imports MONAI and torch),
and hand on exactly what MONAI's readers would: the same voxels, layout and affine, and MONAI's repair of a
NIfTI header whose voxel sizes disagree with its transform."""

from __future__ import annotations

import warnings

import itk
import nibabel as nib
import numpy as np
import pytest
from medclip_ad.io.dicom_reader import itk_affine, itk_array
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.synthetic import make_synthetic_study
from monai.data import ITKReader, NibabelReader, PILReader
from PIL import Image


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_synthetic_study(tmp_path_factory.mktemp("readers") / "study")


def _monai_nifti(path):
    reader = NibabelReader()
    array, meta = reader.get_data(reader.read(path))
    return np.asarray(array, dtype=np.float32), np.asarray(meta["affine"], dtype=np.float64)


def _read(path):
    [source], _ = discover_cases([path])
    return read_case(source)


def test_nifti_volume_as_monai_reads_it(study):
    scan = _read(study.nifti_path)
    array, affine = _monai_nifti(study.nifti_path)
    assert np.array_equal(scan.array, array) and np.array_equal(scan.affine, affine)


@pytest.mark.parametrize("codes", [(1, 1), (1, 0), (0, 1)])
def test_a_header_whose_voxel_sizes_disagree_is_repaired_as_monai_repairs_it(tmp_path, codes):
    """pixdim says 1 mm, the transform 2.5 mm: MONAI takes the transform that agrees, or repairs pixdim."""
    volume = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    sform = np.diag([2.5, 2.5, 3.0, 1.0])
    sform[:3, 3] = [-4.0, 7.0, 1.0]
    qform = np.diag([-1.0, 1.0, 1.0, 1.0])
    image = nib.Nifti1Image(volume, None)
    image.set_sform(sform, codes[0])
    image.set_qform(qform, codes[1])
    image.header.set_zooms((1.0, 1.0, 1.0))
    path = tmp_path / "mismatched.nii.gz"
    nib.save(image, path)
    scan = _read(path)
    array, affine = _monai_nifti(path)
    assert np.array_equal(scan.array, array) and np.array_equal(scan.affine, affine)


def test_dicom_series_as_monai_reads_it(study):
    scan = _read(study.dicom_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        image = itk.imread(list(scan.metadata["files"]), itk.F)  # the slices in the reader's order
        array, meta = ITKReader(pixel_type=itk.F).get_data(image)
    assert np.array_equal(itk_array(image), array) and np.array_equal(itk_affine(image), meta["affine"])
    assert np.array_equal(scan.array, np.asarray(array, dtype=np.float32))
    expected = np.asarray(meta["affine"], dtype=np.float64)
    assert np.allclose(scan.affine[:, [0, 1, 3]], expected[:, [0, 1, 3]])  # the slice step is measured (reader)


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "I;16"])
def test_images_as_monai_reads_them(tmp_path, mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"image_{mode.replace(';', '')}.png"
    image.save(path)
    scan = _read(path)
    converter = (lambda img: img.convert("RGB")) if mode == "P" else None
    array, meta = PILReader(converter=converter, reverse_indexing=False).get_data(
        PILReader(converter=converter, reverse_indexing=False).read(path))
    assert np.array_equal(scan.array, np.asarray(array)), mode
    assert scan.metadata["mode"] == str(meta["mode"]) and scan.metadata["format"] == str(meta["format"])
