"""The coarse preview a large volume is first shown with (app/medclip_viewer/preview_volume.py): its size,
its values (scan blocks averaged in their units, map blocks at their highest), its place in the world, and
the display files and viewer arguments that carry it. The browser side (preview first, then the full
volumes) is checked in tests/test_viewer_browser.py.
"""

from __future__ import annotations

import gzip
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.io.scan import Scan

APP_DIR = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(APP_DIR))  # the viewer's modules import by name, as Streamlit runs them

from medclip_viewer import niivue_viewer  # noqa: E402
from medclip_viewer.cases import CaseResult  # noqa: E402
from medclip_viewer.preview_volume import PREVIEW_MAX_VOXELS, preview_affine, preview_factor, reduce_blocks  # noqa: E402

AFFINE = np.array([[-0.8, 0.0, 0.0, 100.0], [0.0, 0.8, 0.0, -90.0], [0.0, 0.0, 2.0, 30.0], [0.0, 0.0, 0.0, 1.0]])


def read_served(url: str) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress((niivue_viewer.served_folder() / url).read_bytes()))


@pytest.mark.parametrize("shape", [(256, 256, 120), (512, 512, 300), (103, 101, 99), (2000, 30, 30)])
def test_the_factor_is_the_smallest_that_fits_the_preview_budget(shape):
    factor = preview_factor(shape)
    coarse = lambda f: math.prod(-(-size // f) for size in shape)  # noqa: E731
    assert factor > 1 and coarse(factor) <= PREVIEW_MAX_VOXELS < coarse(factor - 1)


def test_a_volume_within_the_budget_has_no_preview():
    assert preview_factor((128, 128, 32)) == 1 and preview_factor((100, 100, 100)) == 1


def test_blocks_are_averaged_or_kept_at_their_highest_with_edges_padded():
    volume = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    mean = reduce_blocks(volume, 2, np.mean)
    assert mean.shape == (3, 2, 2)
    assert mean[0, 0, 0] == pytest.approx(volume[:2, :2, :2].mean())
    # the last block along each axis repeats the edge voxel: x = 4 twice, z = 2 twice
    edge = np.pad(volume, ((0, 1), (0, 0), (0, 1)), mode="edge")[4:6, 2:4, 2:4]
    assert mean[2, 1, 1] == pytest.approx(edge.mean())
    hot = np.zeros((6, 6, 6), dtype=np.float32)
    hot[3, 4, 5] = 0.9
    peak = reduce_blocks(hot, 3, np.max)
    assert peak.shape == (2, 2, 2) and peak[1, 1, 1] == pytest.approx(0.9) and peak.sum() == pytest.approx(0.9)


def test_integer_volumes_stay_integers_with_rounded_means():
    volume = np.array([[[-1000, -999], [0, 1]], [[40, 41], [42, 44]]], dtype=np.int16)
    mean = reduce_blocks(volume, 2, np.mean)
    assert mean.dtype == np.int16 and mean.shape == (1, 1, 1)
    assert int(mean[0, 0, 0]) == round(float(volume.mean()))


def test_a_preview_voxel_sits_at_the_centre_of_its_block():
    for factor in (2, 3):
        coarse = preview_affine(AFFINE, factor)
        for voxel in ([0, 0, 0], [3, 1, 2]):
            block = [factor * v + (factor - 1) / 2 for v in voxel]
            np.testing.assert_allclose(coarse @ [*voxel, 1.0], AFFINE @ [*block, 1.0])
        np.testing.assert_allclose(np.abs(np.diag(coarse)[:3]), factor * np.abs(np.diag(AFFINE)[:3]))


def test_a_large_scan_and_its_map_get_preview_files_on_the_same_grid(tmp_path):
    rng = np.random.default_rng(0)
    shape = (130, 128, 64)  # 1.06 M voxels: just over the budget, so blocks of 2
    hu = rng.integers(-1000, 1000, shape).astype(np.int16)
    scan = Scan("big", tmp_path / "big.nii.gz", "volume", hu, affine=AFFINE)
    anomaly_map = np.zeros(shape, dtype=np.float32)
    anomaly_map[77, 5, 40] = 2.5
    result = CaseResult({"kind": "volume", "map_range": [0.0, 3.0]}, tmp_path)
    nib.save(nib.Nifti1Image(anomaly_map, AFFINE), result.map_path)

    scan_files = niivue_viewer.scan_files(scan)
    map_files = niivue_viewer.map_files(result, anomaly_map, AFFINE, volume=True)
    full, preview = read_served(scan_files.full), read_served(scan_files.preview)
    assert full.shape == shape and preview.shape == (65, 64, 32)
    np.testing.assert_array_equal(np.asarray(full.dataobj), hu)
    assert np.asarray(preview.dataobj).dtype == np.int16
    assert int(np.asarray(preview.dataobj)[10, 20, 30]) == round(float(hu[20:22, 40:42, 60:62].mean()))
    np.testing.assert_allclose(preview.affine, preview_affine(AFFINE, 2))
    map_preview = read_served(map_files.preview)
    assert map_preview.shape == preview.shape
    np.testing.assert_allclose(map_preview.affine, preview.affine)
    levels = map_preview.get_fdata()
    assert levels[38, 2, 20] == pytest.approx(2.5, abs=3.0 / 255)  # the hot voxel's block keeps its value
    assert np.count_nonzero(levels) == 1

    urls = niivue_viewer.display_urls(scan_files, map_files)
    assert urls == {"scan_url": scan_files.full, "map_url": map_files.full,
                    "preview": {"scan_url": scan_files.preview, "map_url": map_files.preview}}


def test_a_small_volume_and_a_2d_image_are_shown_at_once(tmp_path):
    small = Scan("small", tmp_path / "s.nii.gz", "volume", np.zeros((64, 64, 32), dtype=np.int16), affine=AFFINE)
    assert niivue_viewer.scan_files(small).preview is None
    picture = np.zeros((1200, 1000), dtype=np.uint8)  # 1.2 M pixels: over the budget, but one slice
    image = Scan("photo", tmp_path / "p.png", "image", picture, spacing=(1.0, 1.0))
    assert niivue_viewer.scan_files(image).preview is None
    result = CaseResult({"kind": "image", "map_range": [0.0, 1.0]}, tmp_path)
    image_map = niivue_viewer.image_volume(np.zeros((1200, 1000), dtype=np.float32))
    files = niivue_viewer.map_files(result, image_map, niivue_viewer.IMAGE_AFFINE, volume=False)
    assert files.preview is None
    assert niivue_viewer.display_urls(niivue_viewer.scan_files(small), files)["preview"] is None
