"""Lesion components of thresholded maps: counts, mL, mm, patient coordinates and slices, checked on
volumes whose lesions are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from medclip_ad.inference.lesions import image_components, lesion_mask, volume_components

SPACING = np.array([0.8, 1.2, 2.5])  # mm along i, j, k: anisotropic, so a swapped axis cannot pass
ORIGIN = np.array([-20.0, 35.0, -60.0])
SHAPE = (60, 50, 16)
THRESHOLD = 1.0


def _affine() -> np.ndarray:
    """RAS affine with the first axis running right-to-left (as DICOM-derived volumes often do)."""
    affine = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = ORIGIN
    return affine


def _world(index: np.ndarray) -> np.ndarray:
    return _affine()[:3, :3] @ index + ORIGIN


@pytest.fixture(scope="module")
def two_lesions() -> tuple[np.ndarray, dict]:
    """A box of 10 x 5 x 4 voxels and a ball of radius 7 mm, apart, on a low background."""
    map_volume = np.full(SHAPE, 0.2, np.float32)
    box = (slice(5, 15), slice(8, 13), slice(2, 6))
    map_volume[box] = 2.0
    map_volume[12, 10, 4] = 3.5  # its peak
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    centre = np.array([40, 30, 10])
    distance = np.sqrt(((i - centre[0]) * SPACING[0]) ** 2 + ((j - centre[1]) * SPACING[1]) ** 2
                       + ((k - centre[2]) * SPACING[2]) ** 2)
    ball = distance <= 7.0
    map_volume[ball] = 1.5
    return map_volume, {"box": box, "ball": ball, "centre": centre}


def test_two_lesions_measure_as_built(two_lesions) -> None:
    map_volume, truth = two_lesions
    mask = lesion_mask(map_volume, THRESHOLD)
    components = volume_components(map_volume, mask, _affine(), slice_axis=2)
    assert len(components) == 2
    voxel_ml = float(np.prod(SPACING)) / 1000
    ball_voxels = int(truth["ball"].sum())
    # largest first: the ball has more voxels than the 200-voxel box
    assert ball_voxels > 200
    ball, box = components
    assert (ball.label, box.label) == (1, 2)

    assert box.voxels == 200 and box.volume_ml == pytest.approx(200 * voxel_ml)
    extent = np.array([10, 5, 4]) * SPACING  # the box's physical size
    diagonal = float(np.linalg.norm(extent))
    assert diagonal - float(np.linalg.norm(SPACING)) <= box.largest_diameter_mm <= diagonal  # within one voxel
    assert box.largest_diameter_mm == pytest.approx(float(np.linalg.norm((extent - SPACING))))  # centre to centre
    box_centre = _world(np.array([9.5, 10.0, 3.5]))
    np.testing.assert_allclose(box.centroid_lps_mm, box_centre * [-1, -1, 1], atol=1e-9)
    assert box.peak_score == pytest.approx(3.5) and box.peak_voxel == (12, 10, 4) and box.peak_slice == 4
    assert box.mean_score == pytest.approx((199 * 2.0 + 3.5) / 200)
    assert (box.first_slice, box.last_slice, box.slices_spanned, box.source_slices) == (2, 5, 4, (2, 5))

    # the ball: volume within one voxel's worth of surface, diameter within one voxel of 14 mm
    assert ball.voxels == ball_voxels
    assert abs(ball.volume_ml - 4 / 3 * np.pi * 7.0 ** 3 / 1000) < 0.15 * ball.volume_ml
    assert abs(ball.largest_diameter_mm - 14.0) <= SPACING.max()
    np.testing.assert_allclose(ball.centroid_lps_mm, _world(truth["centre"]) * [-1, -1, 1], atol=1e-6)
    assert ball.peak_score == pytest.approx(1.5) and ball.mean_score == pytest.approx(1.5)
    assert (ball.first_slice, ball.last_slice) == (8, 12) and ball.slices_spanned == 5


def test_components_along_another_axis_count_slices_on_that_axis(two_lesions) -> None:
    map_volume, _ = two_lesions
    [_, box] = volume_components(map_volume, lesion_mask(map_volume, THRESHOLD), _affine(), slice_axis=0)
    assert (box.first_slice, box.last_slice, box.slices_spanned, box.peak_slice) == (5, 14, 10, 12)
    assert box.source_slices == (2, 5)  # the third array axis, whatever was scored


def test_diagonal_neighbours_join_and_nothing_is_no_component() -> None:
    map_volume = np.zeros((6, 6, 6), np.float32)
    map_volume[1, 1, 1] = map_volume[2, 2, 2] = 2.0  # 26-connected: one finding
    map_volume[4, 4, 4] = 2.0
    components = volume_components(map_volume, lesion_mask(map_volume, THRESHOLD), np.eye(4), slice_axis=2)
    assert [c.voxels for c in components] == [2, 1]
    assert components[0].largest_diameter_mm == pytest.approx(np.sqrt(3))
    assert components[1].largest_diameter_mm == 0.0
    assert volume_components(map_volume, lesion_mask(map_volume, 5.0), np.eye(4), slice_axis=2) == []


def test_image_components_are_in_pixels() -> None:
    image = np.zeros((40, 50), np.float32)
    image[5:9, 10:30] = 2.0  # 4 x 20 = 80 pixels
    image[30, 40] = 3.0
    big, dot = image_components(image, lesion_mask(image, THRESHOLD))
    assert (big.pixels, dot.pixels) == (80, 1)
    assert big.largest_diameter_px == pytest.approx(np.hypot(3, 19))
    assert big.centroid_px == pytest.approx((6.5, 19.5)) and dot.peak_px == (30, 40)
