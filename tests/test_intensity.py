"""Intensity mapping with hand-checked numbers, on synthetic arrays and on real CT/MR files.

Rounding is half up after clipping: (value - low) * 255 / (high - low), then floor(x + 0.5).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from medclip_ad.errors import UserInputError
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.intensity import (
    CT_WINDOW_PRESETS,
    IntensityMapping,
    WindowPreset,
    percentile_bounds,
    resolve_window,
    to_uint8,
)
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan
from pydicom.data import get_testdata_file


def _volume(array: np.ndarray, modality: str | None = None) -> Scan:
    return Scan("v", Path("v.nii.gz"), "volume", np.asarray(array), np.eye(4), modality)


def test_soft_tissue_window_hand_checked() -> None:
    # width 400, level 40: black at -160 HU, white at 240 HU; 40 HU is 127.5 and rounds half up to 128.
    hu = np.array([-1000, -160, -159, 40, 239, 240, 3000], dtype=np.float32)
    assert to_uint8(hu, -160.0, 240.0).tolist() == [0, 0, 1, 128, 254, 255, 255]
    # -159 -> 0.6375 -> 1; 239 -> 254.3625 -> 254


def test_presets_are_the_published_table() -> None:
    table = {name: (p.width, p.level) for name, p in CT_WINDOW_PRESETS.items()}
    assert table == {"brain": (80, 40), "soft_tissue": (400, 40), "lung": (1500, -600), "bone": (2500, 480)}
    assert CT_WINDOW_PRESETS["lung"].bounds == (-1350.0, 150.0)
    assert to_uint8(np.array([0.0, 40.0, 80.0]), *CT_WINDOW_PRESETS["brain"].bounds).tolist() == [0, 128, 255]


def test_ct_defaults_to_soft_tissue_and_window_overrides() -> None:
    scan = _volume(np.array([[[-160.0, 40.0, 240.0]]]), modality="CT")
    assert IntensityMapping.from_scan(scan).bounds == (-160.0, 240.0)
    assert IntensityMapping.from_scan(scan)(scan.array).ravel().tolist() == [0, 128, 255]
    assert IntensityMapping.from_scan(scan, "brain").bounds == (0.0, 80.0)
    assert IntensityMapping.from_scan(scan, (1000, 0)).bounds == (-500.0, 500.0)
    assert IntensityMapping.from_scan(scan, "1500/-600").bounds == CT_WINDOW_PRESETS["lung"].bounds


@pytest.mark.parametrize("text", ["400/40", "400,40", " 400 / 40 ", "soft_tissue", "Soft Tissue", "soft-tissue"])
def test_window_text_forms(text: str) -> None:
    assert resolve_window(text).bounds == (-160.0, 240.0)


@pytest.mark.parametrize("bad", ["wide", "400", "0/40", "-5/40", (0, 40), (float("nan"), 40)])
def test_bad_windows_are_one_clear_line(bad: object) -> None:
    with pytest.raises(UserInputError) as error:
        resolve_window(bad)
    assert "\n" not in str(error.value) and "--window" in str(error.value)


def test_mr_uses_percentiles_of_the_whole_volume_not_per_slice() -> None:
    rng = np.random.default_rng(0)
    volume = np.stack([rng.normal(100.0 * (k + 1), 5.0, (32, 32)) for k in range(4)], axis=2).astype(np.float32)
    scan = _volume(volume, modality="MR")
    mapping = IntensityMapping.from_scan(scan)
    low, high = np.percentile(volume, [0.5, 99.5])
    assert mapping.bounds == pytest.approx((low, high))
    assert mapping.description == "percentiles 0.5-99.5"
    # one mapping for all slices: the dim first slice stays dark, the bright last slice stays bright
    assert mapping(volume[:, :, 0]).mean() < 40 and mapping(volume[:, :, 3]).mean() > 215
    np.testing.assert_array_equal(mapping(volume[:, :, 2]), mapping(volume)[:, :, 2])


def test_unknown_modality_and_16_bit_images_use_percentiles() -> None:
    image = np.arange(0, 60000, 6, dtype=np.uint16).reshape(100, 100)
    scan = Scan("i", Path("i.png"), "image", image)
    mapping = IntensityMapping.from_scan(scan)
    assert mapping.bounds == pytest.approx(tuple(np.percentile(image, [0.5, 99.5])))
    mapped = mapping(image)
    assert mapped.dtype == np.uint8 and mapped.min() == 0 and mapped.max() == 255


def test_8_bit_images_pass_through_exactly() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mapping = IntensityMapping.from_scan(Scan("i", Path("i.png"), "image", rgb))
    assert mapping.bounds is None
    out = mapping(rgb)
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)


def test_nan_and_inf() -> None:
    values = np.array([np.nan, -np.inf, np.inf, 0.0, 10.0], dtype=np.float32)
    assert to_uint8(values, 0.0, 10.0).tolist() == [0, 0, 255, 0, 255]
    assert percentile_bounds(values) == pytest.approx((0.05, 9.95))
    with pytest.raises(UserInputError) as error:
        IntensityMapping.from_scan(_volume(np.full((3, 3, 3), np.nan, np.float32), modality="MR"))
    assert "NaN" in str(error.value) and "v.nii.gz" in str(error.value)


def test_constant_volume_maps_to_a_constant_image_without_division_by_zero() -> None:
    scan = _volume(np.full((8, 8, 3), 42.0, np.float32), modality="MR")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mapping = IntensityMapping.from_scan(scan)
        out = mapping(scan.array)
    assert mapping.bounds == (42.0, 42.0)
    assert out.dtype == np.uint8 and np.all(out == 0)


def test_real_ct_file_in_soft_tissue_window() -> None:
    cases, _ = discover_cases([Path(get_testdata_file("CT_small.dcm", download=False))])
    scan = read_case(cases[0])
    mapped = IntensityMapping.from_scan(scan)(scan.array)
    hu = scan.array.astype(np.float64)
    expected = np.floor(np.clip((hu + 160.0) * 255.0 / 400.0, 0, 255) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(mapped, expected)


def test_real_mr_file_uses_its_own_percentiles() -> None:
    cases, _ = discover_cases([Path(get_testdata_file("MR_small.dcm", download=False))])
    scan = read_case(cases[0])
    mapping = IntensityMapping.from_scan(scan)
    assert mapping.bounds == pytest.approx(tuple(np.percentile(scan.array, [0.5, 99.5])))
    mapped = mapping(scan.array)
    assert mapped.min() == 0 and mapped.max() == 255


def test_window_preset_object_is_accepted() -> None:
    preset = WindowPreset("custom", 100.0, 0.0)
    assert resolve_window(preset) is preset
