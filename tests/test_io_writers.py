"""Writers: maps land exactly on their scan's geometry, and no file is ever half-written."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.io import writers
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan
from medclip_ad.io.writers import atomic_write, write_json, write_npy, write_png, write_volume_map
from nibabel.testing import data_path as nibabel_data
from PIL import Image
from pydicom.data import get_testdata_file

from dicom_factory import simpleitk_ras_affine

GEOMETRY_TOLERANCE_MM = 1e-4


def _read(path: Path) -> Scan:
    cases, problems = discover_cases([path])
    assert not problems
    return read_case(cases[0])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_map_of_dicom_series_has_simpleitk_geometry(tmp_path: Path) -> None:
    series = Path(get_testdata_file("CT5N", download=False))
    scan = _read(series)
    heat = np.random.default_rng(0).random(scan.array.shape).astype(np.float32)
    write_volume_map(heat, scan, tmp_path / "anomaly_map.nii.gz")
    written = nib.load(tmp_path / "anomaly_map.nii.gz")
    affine, size, _ = simpleitk_ras_affine(series)
    assert written.shape == size and written.get_data_dtype() == np.float32
    np.testing.assert_allclose(written.affine, affine, atol=GEOMETRY_TOLERANCE_MM)
    np.testing.assert_array_equal(np.asarray(written.dataobj), heat)  # never rescaled
    assert _leftovers(tmp_path) == []


def test_map_of_nifti_reproduces_the_input_header_geometry(tmp_path: Path) -> None:
    source = Path(nibabel_data) / "anatomical.nii"
    scan = _read(source)
    write_volume_map(np.ones(scan.array.shape, np.float32), scan, tmp_path / "map.nii.gz")
    written, original = nib.load(tmp_path / "map.nii.gz"), nib.load(source)
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine, atol=GEOMETRY_TOLERANCE_MM)
    assert int(written.header["sform_code"]) == int(original.header["sform_code"]) == 2
    assert int(written.header["qform_code"]) == int(original.header["qform_code"])


def test_single_slice_volume_keeps_its_third_axis(tmp_path: Path) -> None:
    scan = _read(Path(get_testdata_file("CT_small.dcm", download=False)))
    assert scan.array.shape == (128, 128, 1)
    write_volume_map(np.zeros(scan.array.shape, np.float32), scan, tmp_path / "map.nii.gz")
    assert nib.load(tmp_path / "map.nii.gz").shape == (128, 128, 1)


def test_wrong_shape_is_refused_and_nothing_written(tmp_path: Path) -> None:
    scan = _read(Path(get_testdata_file("CT5N", download=False)))
    with pytest.raises(ValueError, match="shape"):
        write_volume_map(np.zeros((16, 16, 4), np.float32), scan, tmp_path / "map.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scan = _read(Path(get_testdata_file("CT5N", download=False)))
    target = tmp_path / "map.nii.gz"
    target.write_bytes(b"previous")

    def crash_half_way(image: nib.Nifti1Image, filename: Path) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(writers.nib, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        write_volume_map(np.zeros(scan.array.shape, np.float32), scan, target)
    assert target.read_bytes() == b"previous" and _leftovers(tmp_path) == []


def test_atomic_write_renames_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "scores.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as temporary:
            assert temporary.parent == target.parent and temporary.name.endswith(".json")
            temporary.write_text("{")
            raise RuntimeError("bug while writing")
    assert not target.exists() and _leftovers(target.parent) == []
    with atomic_write(target) as temporary:
        temporary.write_text("{}")
        assert not target.exists()
    assert target.read_text() == "{}" and _leftovers(target.parent) == []


def test_png_npy_json_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    write_png(tmp_path / "overlay.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "overlay.png")), rgb)

    heat = np.random.default_rng(1).random((12, 20)).astype(np.float32)
    write_npy(tmp_path / "anomaly_map.npy", heat)
    loaded = np.load(tmp_path / "anomaly_map.npy", allow_pickle=False)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, heat)

    scores = {"score": np.float32(0.25), "slice_scores": np.array([0.1, 0.2]), "top": [np.int64(3)], "input": tmp_path}
    write_json(tmp_path / "scores.json", scores)
    assert json.loads((tmp_path / "scores.json").read_text()) == {
        "score": 0.25,
        "slice_scores": [0.1, 0.2],
        "top": [3],
        "input": str(tmp_path),
    }
    assert _leftovers(tmp_path) == []


def test_bad_payloads_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json(tmp_path / "scores.json", {"score": float("nan")})
    with pytest.raises(TypeError):
        write_json(tmp_path / "scores.json", {"model": object()})
    with pytest.raises(ValueError):
        write_png(tmp_path / "overlay.png", np.zeros((4, 4, 3), np.float32))
    assert list(tmp_path.iterdir()) == []
