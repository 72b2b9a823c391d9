"""Readers and discovery on real files shipped in PyPI packages (pydicom, pydicom-data, nibabel).

Geometry is checked against independent readers: SimpleITK for DICOM (LPS converted to RAS), nibabel
for NIfTI. Every written map must have the input's shape and an affine equal to that geometry to 1e-4 mm.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from medclip_ad import limits
from medclip_ad.errors import UserInputError
from medclip_ad.io.discovery import CaseSource, discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.synthetic import SyntheticLesion, make_synthetic_study
from medclip_ad.io.writers import write_volume_map
from nibabel.testing import data_path as nibabel_data
from PIL import Image
from pydicom.data import get_testdata_file

from dicom_factory import simpleitk_ras_affine, template_path, template_stored_volume, write_series

GEOMETRY_TOLERANCE_MM = 1e-4
CT5N = Path(get_testdata_file("CT5N", download=False) or "missing-CT5N")


def _only_case(path: Path) -> CaseSource:
    cases, problems = discover_cases([path])
    assert problems == [] and len(cases) == 1, (cases, problems)
    return cases[0]


def _testdata(name: str) -> Path:
    """A pydicom or pydicom-data file, never downloaded: skip when it is not installed."""
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"{name} is not available offline (pydicom-data not installed)")
    return Path(found)


def _assert_map_lies_on(scan, reference_affine: np.ndarray, tmp_path: Path) -> None:
    """Write a map of the scan and check shape and affine as a NIfTI reader sees them."""
    out = tmp_path / f"{scan.name}_map.nii.gz"
    write_volume_map(np.zeros(scan.array.shape, np.float32), scan, out)
    written = nib.load(out)
    assert written.shape == scan.array.shape
    np.testing.assert_allclose(written.affine, reference_affine, atol=GEOMETRY_TOLERANCE_MM)


def _assert_one_clear_line(error: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    for word in words:
        assert word in message, message


# --- DICOM series --------------------------------------------------------------------------------


def test_pydicom_ct_series_matches_simpleitk(tmp_path: Path) -> None:
    case = _only_case(CT5N)
    assert case.kind == "dicom" and len(case.paths) == 5 and case.name == "CT5N"
    scan = read_case(case)
    affine, size, array = simpleitk_ras_affine(CT5N)
    assert scan.kind == "volume" and scan.modality == "CT" and scan.slice_axis == 2
    assert scan.array.shape == size == (16, 16, 5) and scan.array.dtype == np.float32
    np.testing.assert_array_equal(scan.array, array)
    np.testing.assert_allclose(scan.affine, affine, atol=GEOMETRY_TOLERANCE_MM)
    np.testing.assert_allclose(scan.spacing, (0.488281, 0.488281, 2.5), atol=GEOMETRY_TOLERANCE_MM)
    _assert_map_lies_on(scan, affine, tmp_path)


def test_assembled_oblique_series_in_shuffled_files_matches_simpleitk(tmp_path: Path) -> None:
    tilt = np.deg2rad(25.0)
    write_series(tmp_path / "oblique", 7, step_mm=3.0, orientation=(1, 0, 0, 0, np.cos(tilt), np.sin(tilt)))
    scan = read_case(_only_case(tmp_path / "oblique"))
    affine, size, array = simpleitk_ras_affine(tmp_path / "oblique")
    assert scan.array.shape == size == (128, 128, 7)
    np.testing.assert_array_equal(scan.array, array)
    np.testing.assert_allclose(scan.affine, affine, atol=GEOMETRY_TOLERANCE_MM)
    _assert_map_lies_on(scan, affine, tmp_path)


def test_lesion_slices_survive_shuffled_files_and_scrambled_instance_numbers(tmp_path: Path) -> None:
    n_slices, lesion_slices = 12, [4, 5, 6]
    stored = template_stored_volume(n_slices)
    stored[40:60, 50:70, lesion_slices] = 3000  # stored 3000 -> 1976 HU, far above anything in the template
    write_series(tmp_path / "lesion", n_slices, stored=stored, scramble_instance_numbers=True, seed=3)
    scan = read_case(_only_case(tmp_path / "lesion"))
    found = np.flatnonzero((scan.array > 1900).any(axis=(0, 1))).tolist()
    assert found == lesion_slices
    np.testing.assert_array_equal(scan.array, stored.astype(np.float32) - 1024)

    out = tmp_path / "map.nii.gz"
    write_volume_map((scan.array > 1900).astype(np.float32), scan, out)
    written = nib.load(out)
    assert np.flatnonzero(np.asarray(written.dataobj).any(axis=(0, 1))).tolist() == lesion_slices
    affine, _, _ = simpleitk_ras_affine(tmp_path / "lesion")
    np.testing.assert_allclose(written.affine, affine, atol=GEOMETRY_TOLERANCE_MM)


def test_slices_are_ordered_along_the_normal_not_by_instance_number() -> None:
    scan = read_case(_only_case(CT5N))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.metadata["files"]]
    positions = [float(h.ImagePositionPatient[2]) for h in headers]
    assert positions == sorted(positions)
    numbers = [int(h.InstanceNumber) for h in headers]
    assert numbers == sorted(numbers, reverse=True)  # CT5N numbers its slices from the top down


def test_synthetic_study_reads_the_same_from_dicom_and_nifti(tmp_path: Path) -> None:
    lesion = SyntheticLesion(radius_mm=10)
    study = make_synthetic_study(tmp_path, shape=(48, 40, 12), spacing=(4.0, 4.5, 6.0), lesion=lesion)
    names = sorted(os.listdir(study.dicom_dir))
    rng = np.random.default_rng(7)
    for name, new in zip(names, rng.permutation(len(names))):  # shuffle the file order on disk
        os.rename(study.dicom_dir / name, study.dicom_dir / f"x{new:03d}")
    from_dicom = read_case(_only_case(study.dicom_dir))
    from_nifti = read_case(_only_case(study.nifti_path))
    np.testing.assert_array_equal(from_dicom.array, study.volume_hu.astype(np.float32))
    np.testing.assert_array_equal(from_nifti.array, from_dicom.array)
    np.testing.assert_allclose(from_dicom.affine, study.affine, atol=GEOMETRY_TOLERANCE_MM)
    np.testing.assert_allclose(from_nifti.affine, study.affine, atol=GEOMETRY_TOLERANCE_MM)
    lesion_hu = from_dicom.array[study.lesion_mask]
    assert abs(float(lesion_hu.mean()) - SyntheticLesion().hu) < 3.0
    assert study.lesion_slices == tuple(np.flatnonzero(study.lesion_mask.any(axis=(0, 1))))
    affine, _, _ = simpleitk_ras_affine(study.dicom_dir)
    np.testing.assert_allclose(from_dicom.affine, affine, atol=GEOMETRY_TOLERANCE_MM)

    # DICOM -> map -> NIfTI: the lesion's slices are where they were, on the NIfTI input's grid
    found = np.abs(from_dicom.array - SyntheticLesion().hu) < 15
    write_volume_map(found.astype(np.float32), from_dicom, tmp_path / "map.nii.gz")
    written = nib.load(tmp_path / "map.nii.gz")
    map_slices = tuple(np.flatnonzero(np.asarray(written.dataobj).any(axis=(0, 1))))
    assert map_slices == study.lesion_slices
    np.testing.assert_allclose(written.affine, nib.load(study.nifti_path).affine, atol=GEOMETRY_TOLERANCE_MM)


def test_patient_identifiers_only_under_patient_key(tmp_path: Path) -> None:
    study = make_synthetic_study(tmp_path, shape=(16, 16, 4))
    scan = read_case(_only_case(study.dicom_dir))
    assert scan.metadata["patient"]["PatientName"] == "ANONYMOUS^DEMO"
    public = {k: v for k, v in scan.metadata.items() if k != "patient"}
    assert "ANONYMOUS" not in json.dumps(public) and "DEMO0001" not in json.dumps(public)


# --- single DICOM files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("CT_small.dcm", "CT"),  # pydicom
        ("MR_small.dcm", "MR"),  # pydicom
        ("693_UNCR.dcm", "CT"),  # pydicom-data, 512 x 512 CT
        ("MR2_UNCR.dcm", "MR"),  # pydicom-data, 1024 x 1024 oblique MR with rescale slope
        ("RG1_UNCR.dcm", "CR"),  # pydicom-data, radiograph without patient geometry
        ("emri_small.dcm", "MR"),  # enhanced multi-frame MR, 10 frames
        ("eCT_Supplemental.dcm", "CT"),  # enhanced multi-frame CT, 2 frames
    ],
)
def test_single_dicom_file_matches_simpleitk(name: str, modality: str, tmp_path: Path) -> None:
    path = _testdata(name)
    scan = read_case(_only_case(path))
    affine, size, array = simpleitk_ras_affine(path)
    assert scan.kind == "volume" and scan.modality == modality
    assert scan.array.shape == size
    np.testing.assert_allclose(scan.array, array, rtol=1e-6)
    np.testing.assert_allclose(scan.affine, affine, atol=GEOMETRY_TOLERANCE_MM)
    _assert_map_lies_on(scan, affine, tmp_path)


def test_rescale_slope_and_intercept_are_applied() -> None:
    path = _testdata("CT_small.dcm")
    ds = pydicom.dcmread(path)
    scan = read_case(_only_case(path))
    expected = ds.pixel_array.T.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(scan.array[:, :, 0], expected)


def test_monochrome1_radiograph_reads_bright_for_dense() -> None:
    path = CT5N.parents[1] / "77654033" / "CR3" / "6278"  # pydicom's MONOCHROME1 CR
    raw = pydicom.dcmread(path).pixel_array.T.astype(np.float64)
    scan = read_case(_only_case(path))
    assert scan.metadata["display_inverted"] is True
    assert np.corrcoef(scan.array[:, :, 0].ravel(), raw.ravel())[0, 1] < -0.99


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb.dcm",  # uncompressed RGB
        "SC_ybr_full_uncompressed.dcm",  # YBR_FULL, shown as RGB
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless: GDCM decodes what pydicom alone cannot
        "SC_rgb_16bit.dcm",  # pydicom-data, 16-bit colour: ITK's wrapping lacks it, pydicom decodes it
    ],
)
def test_colour_dicom_is_a_2d_rgb_image(name: str) -> None:
    scan = read_case(_only_case(_testdata(name)))
    reference = pydicom.dcmread(_testdata("SC_rgb.dcm" if "jpeg" in name else name)).pixel_array
    assert scan.kind == "image" and scan.array.shape == (100, 100, 3) and scan.array.dtype == reference.dtype
    np.testing.assert_array_equal(scan.array, reference)


def test_deflated_dicom_is_not_mistaken_for_truncated() -> None:
    path = _testdata("image_dfl.dcm")
    scan = read_case(_only_case(path))
    np.testing.assert_array_equal(scan.array[:, :, 0], pydicom.dcmread(path).pixel_array.T)


# --- NIfTI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_nifti_keeps_voxel_order_and_affine(name: str, tmp_path: Path) -> None:
    path = Path(nibabel_data) / name
    reference = nib.load(path)
    scan = read_case(_only_case(path))
    assert scan.kind == "volume" and scan.array.shape == reference.shape and scan.array.dtype == np.float32
    np.testing.assert_array_equal(scan.array, np.asarray(reference.dataobj, dtype=np.float32))
    np.testing.assert_allclose(scan.affine, reference.affine, atol=GEOMETRY_TOLERANCE_MM)
    _assert_map_lies_on(scan, reference.affine, tmp_path)


@pytest.mark.parametrize("name", ["example4d.nii.gz", "functional.nii", "example_nifti2.nii.gz"])
def test_4d_nifti_needs_a_volume_index(name: str, tmp_path: Path) -> None:
    path = Path(nibabel_data) / name
    reference = nib.load(path)
    case = _only_case(path)
    with pytest.raises(UserInputError) as error:
        read_case(case)
    _assert_one_clear_line(error, path, "4-D", "--volume-index")
    last = reference.shape[3] - 1
    scan = read_case(case, volume_index=last)
    assert scan.array.shape == reference.shape[:3] and scan.metadata["volume_index"] == last
    np.testing.assert_array_equal(scan.array, np.asarray(reference.dataobj, dtype=np.float32)[..., last])
    np.testing.assert_allclose(scan.affine, reference.affine, atol=GEOMETRY_TOLERANCE_MM)
    _assert_map_lies_on(scan, reference.affine, tmp_path)
    with pytest.raises(UserInputError) as error:
        read_case(case, volume_index=last + 1)
    _assert_one_clear_line(error, path, "out of range")


def test_volume_index_is_ignored_for_3d_inputs() -> None:
    scan = read_case(_only_case(Path(nibabel_data) / "anatomical.nii"), volume_index=3)
    assert scan.array.shape == (33, 41, 25) and scan.metadata["volume_index"] is None


# --- 2-D images ----------------------------------------------------------------------------------


def _image_cases(tmp_path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "grey8.png": rng.integers(0, 256, (30, 50), dtype=np.uint8),
        "rgb8.png": rng.integers(0, 256, (30, 50, 3), dtype=np.uint8),
        "grey16.png": rng.integers(0, 65536, (30, 50), dtype=np.uint16),
        "grey16.tif": rng.integers(0, 65536, (30, 50), dtype=np.uint16),
        "rgb16.tiff": rng.integers(0, 65536, (30, 50, 3), dtype=np.uint16),
        "float.tif": rng.random((30, 50), dtype=np.float32),
    }
    for name, array in arrays.items():
        if name.endswith(".png"):
            Image.fromarray(array).save(tmp_path / name)
        else:
            tifffile.imwrite(tmp_path / name, array, photometric="rgb" if array.ndim == 3 else "minisblack")
    return arrays


def test_2d_images_keep_rows_columns_and_bit_depth(tmp_path: Path) -> None:
    arrays = _image_cases(tmp_path)
    cases, problems = discover_cases([tmp_path])
    assert problems == [] and {c.kind for c in cases} == {"image"} and len(cases) == len(arrays)
    names = [c.name for c in cases]  # file stems; grey16.png and grey16.tif must not share an output folder
    assert sorted(names) == ["float", "grey16", "grey16-2", "grey8", "rgb16", "rgb8"]
    for case in cases:
        scan = read_case(case)
        expected = arrays[case.paths[0].name]
        assert scan.kind == "image" and scan.array.dtype == expected.dtype, case.name
        np.testing.assert_array_equal(scan.array, expected)


def test_jpeg_palette_and_alpha_images_read_as_the_reference_sees_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    Image.fromarray(rgba[:, :, :3]).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgba[:, :, :3]).save(tmp_path / "photo.jpg", quality=90)
    for name in ("alpha.png", "palette.png", "photo.jpg"):
        scan = read_case(_only_case(tmp_path / name))
        reference = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        np.testing.assert_array_equal(scan.array, reference)


# --- discovery and bad input ---------------------------------------------------------------------


def test_folder_with_two_series_gives_two_cases(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    write_series(folder, 4, series_number=2, description="head", seed=1)
    write_series(folder, 3, series_number=5, description="head thin", seed=2)
    cases, problems = discover_cases([folder])
    assert problems == []
    assert sorted(len(c.paths) for c in cases) == [3, 4]
    assert len({c.name for c in cases}) == 2
    assert all(c.name.startswith("study_s") and "/" not in c.name and " " not in c.name for c in cases)
    assert sorted(read_case(c).array.shape[2] for c in cases) == [3, 4]


def test_stray_files_among_dicoms_are_skipped_or_reported(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    write_series(folder, 3)
    (folder / "README").write_text("exported by PACS\n")
    (folder / "notes.txt").write_text("nothing to see\n")
    shutil.copy(_testdata("DICOMDIR"), folder / "DICOMDIR")
    (folder / "broken.dcm").write_bytes(os.urandom(600))
    cases, problems = discover_cases([folder])
    assert len(cases) == 1 and len(cases[0].paths) == 3
    assert [p.path.name for p in problems] == ["broken.dcm"]
    assert "not a DICOM file" in problems[0].message


def test_truncated_dicom_is_reported_and_refused(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    paths = write_series(folder, 4)
    truncated = paths[2]
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    cases, problems = discover_cases([folder])
    assert [p.path for p in problems] == [truncated] and "truncated" in problems[0].message
    with pytest.raises(UserInputError) as error:  # the gap it leaves is not papered over
        read_case(cases[0])
    _assert_one_clear_line(error, folder, "missing")
    with pytest.raises(UserInputError) as error:
        read_case(CaseSource("t", "dicom", (truncated,), truncated))
    _assert_one_clear_line(error, truncated)


@pytest.mark.parametrize("keep_bytes", [20000, 2000])  # cut in the pixel data, cut in the header
def test_truncated_single_dicom_file_is_reported(keep_bytes: int, tmp_path: Path) -> None:
    path = tmp_path / "cut"
    path.write_bytes(template_path().read_bytes()[:keep_bytes])
    with pytest.raises(UserInputError) as error:
        discover_cases([path])
    _assert_one_clear_line(error, path, "truncated")


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(UserInputError) as error:
        discover_cases([missing])
    _assert_one_clear_line(error, missing, "does not exist")
    cases, problems = discover_cases([missing, CT5N])
    assert len(cases) == 1 and problems[0].path == missing


def test_folder_without_images_and_unknown_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no images\n")
    with pytest.raises(UserInputError) as error:
        discover_cases([tmp_path / "empty"])
    _assert_one_clear_line(error, tmp_path / "empty", "no DICOM, NIfTI or 2-D image")
    with pytest.raises(UserInputError) as error:
        discover_cases([tmp_path / "empty" / "README.md"])
    _assert_one_clear_line(error, tmp_path / "empty" / "README.md", "not a DICOM, NIfTI")


def test_all_nan_volume_is_refused_and_constant_volume_is_read(tmp_path: Path) -> None:
    nan_path, constant_path = tmp_path / "nan.nii.gz", tmp_path / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), np.nan, np.float32), np.eye(4)), nan_path)
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), 7.0, np.float32), np.eye(4)), constant_path)
    with pytest.raises(UserInputError) as error:
        read_case(_only_case(nan_path))
    _assert_one_clear_line(error, nan_path, "NaN")
    assert np.all(read_case(_only_case(constant_path)).array == 7.0)


def test_corrupt_files_give_one_clear_line(tmp_path: Path) -> None:
    truncated_nifti = tmp_path / "cut.nii.gz"
    truncated_nifti.write_bytes(gzip.compress((Path(nibabel_data) / "anatomical.nii").read_bytes())[:3000])
    not_nifti = tmp_path / "text.nii"
    not_nifti.write_text("not a volume\n")
    truncated_png = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(truncated_png)
    truncated_png.write_bytes(truncated_png.read_bytes()[:500])
    for path in (truncated_nifti, not_nifti, truncated_png):
        with pytest.raises(UserInputError) as error:
            read_case(_only_case(path))
        _assert_one_clear_line(error, path)


def test_uneven_and_repeated_slices_are_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "gap", 5)
    paths[3].unlink()
    with pytest.raises(UserInputError) as error:
        read_case(_only_case(tmp_path / "gap"))
    _assert_one_clear_line(error, tmp_path / "gap", "uneven")
    first = write_series(tmp_path / "echoes", 3, series_uid="1.2.3.4", seed=1)
    write_series(tmp_path / "echoes" / "second", 3, series_uid="1.2.3.4", seed=2)
    case = _only_case(tmp_path / "echoes")
    assert len(case.paths) == 6 and first[0] in case.paths
    with pytest.raises(UserInputError) as error:
        read_case(case)
    _assert_one_clear_line(error, tmp_path / "echoes", "repeat a position")


def test_huge_inputs_are_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_VOXELS", 1000)
    png = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(png)
    for path in (png, Path(nibabel_data) / "anatomical.nii", CT5N):
        with pytest.raises(UserInputError) as error:
            read_case(_only_case(path))
        _assert_one_clear_line(error, path, "too large")
