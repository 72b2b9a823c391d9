"""The model sees every plane in radiological orientation, whatever the storage order of the scan.

One study stored four ways (RAS NIfTI, LPS NIfTI, a DICOM series, a dcm2niix-style NIfTI with its rows
flipped) must give the same slice scores and the same maps in world space on all three planes. Before
the orientation rule, slices went to the model in storage order: on the study below the four storages'
slice scores differed by up to 6.7e-3 and their world-aligned maps by up to 8.0e-2.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.case import CaseOptions, predict_scan
from medclip_ad.inference.predictor import AnomalyPredictor, Prediction
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.orientation import extract_slice, insert_slice, plane_layout
from medclip_ad.io.readers import read_study
from medclip_ad.io.synthetic import SyntheticLesion, make_synthetic_study
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from probe_detector import PreparedFromPredict

PLANES = ("axial", "coronal", "sagittal")
WINDOW = "400/40"  # one explicit window, so all storages share one intensity mapping


def _store(image: nib.Nifti1Image, axcodes: str, path: Path) -> Path:
    """The same voxels on the same world grid, stored in another axis order / direction."""
    transform = ornt_transform(io_orientation(image.affine), axcodes2ornt(tuple(axcodes)))
    data = apply_orientation(np.asarray(image.dataobj), transform)
    affine = image.affine @ nib.orientations.inv_ornt_aff(transform, image.shape)
    stored = nib.Nifti1Image(data, affine)
    stored.set_sform(affine, code=1)
    stored.set_qform(affine, code=1)
    nib.save(stored, path)
    return path


def _to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return apply_orientation(volume, ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S"))))


def _scores_in_ras_order(scores: np.ndarray, affine: np.ndarray, axis: int) -> np.ndarray:
    """Slice scores ordered along the RAS direction of the slice axis (reversed where storage runs backwards)."""
    return scores[::-1] if io_orientation(affine)[axis, 1] < 0 else scores


@pytest.fixture(scope="module")
def four_storages(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("storages")
    study = make_synthetic_study(folder / "study", shape=(24, 28, 10), spacing=(6.5, 6.5, 10.0),
                                 lesion=SyntheticLesion(center=(0.3, 0.35, 0.7), radius_mm=20.0))
    lps = nib.load(study.nifti_path)
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    return {"dicom": study.dicom_dir, "lps": study.nifti_path,
            "ras": _store(lps, "RAS", folder / "ras.nii.gz"), "dcm2niix": _store(lps, "LAS", folder / "las.nii.gz")}


def test_four_storages_give_the_same_scores_and_world_maps_on_every_plane(four_storages, tiny_backbone):
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=112,
                                                device="cpu", batch_size=8), backbone=tiny_backbone)
    scans = {name: read_study(path) for name, path in four_storages.items()}
    assert nib.aff2axcodes(scans["ras"].affine) == ("R", "A", "S")
    assert nib.aff2axcodes(scans["dcm2niix"].affine) == ("L", "A", "S")
    for plane in PLANES:
        results = {}
        for name, scan in scans.items():
            prediction = predict_scan(predictor, scan, CaseOptions(axis=plane, window=WINDOW))
            results[name] = (_scores_in_ras_order(prediction.slice_scores, scan.affine, prediction.axis),
                             _to_ras(prediction.map, scan.affine))
        reference_scores, reference_map = results["ras"]
        assert np.ptp(reference_scores) > 1e-3  # slices differ, so a wrong slice order could not pass
        for name, (scores, world_map) in results.items():
            np.testing.assert_allclose(scores, reference_scores, atol=1e-5, rtol=0, err_msg=f"{name} {plane}")
            np.testing.assert_allclose(world_map, reference_map, atol=1e-5, rtol=0, err_msg=f"{name} {plane}")


class RecordingProbe(PreparedFromPredict):
    """Stands in for the detector: keeps every picture it is given; each map is the picture's brightness."""

    map_range = 1.0
    random_weights = False

    def __init__(self) -> None:
        self.config = type("Config", (), {"batch_size": 4})()
        self.pictures: list[np.ndarray] = []

    def predict(self, images: list[np.ndarray]) -> Prediction:
        self.pictures.extend(images)
        maps = [image.astype(np.float32) / 255.0 for image in images]
        return Prediction(np.array([m.mean() for m in maps], dtype=np.float32), maps)


# Picture edges per plane in radiological orientation: the patient side at the left and at the top.
LEFT_AND_TOP = {"axial": ("R", "A"), "coronal": ("R", "S"), "sagittal": ("A", "S")}
NORMAL = {"axial": "S", "coronal": "A", "sagittal": "R"}
OCTANT_WEIGHT = {"R": 400, "A": 200, "S": 100}
EXTENT = {"R": 20, "A": 24, "S": 16}  # voxels along each world axis, unequal so a transposed picture is caught
# Picture corners -> (on the left side's half, on the top side's half).
CORNERS = {(0, 0): (1, 1), (0, -1): (0, 1), (-1, 0): (1, 0), (-1, -1): (0, 0)}


def _octant_phantom() -> nib.Nifti1Image:
    """An RAS volume whose value tells its octant: 400 on the patient's right, +200 anterior, +100 superior."""
    shape = tuple(EXTENT[side] for side in "RAS")
    grid = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    values = sum(OCTANT_WEIGHT[side] * (grid[axis] > 0) for axis, side in enumerate("RAS"))
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-19.0, -23.0, -22.5]
    return nib.Nifti1Image(values.astype(np.int16), affine)


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "LAS", "ASR", "PIL"])
def test_model_input_is_the_radiological_picture(axcodes, tmp_path):
    scan = read_study(_store(_octant_phantom(), axcodes, tmp_path / f"{axcodes}.nii.gz"))
    assert nib.aff2axcodes(scan.affine) == tuple(axcodes)
    mapping = IntensityMapping.from_scan(scan, "800/350")
    octant_of = {int(mapping(np.array([value]))[0]): value for value in range(0, 800, 100)}
    assert len(octant_of) == 8
    for plane in PLANES:
        probe = RecordingProbe()
        prediction = predict_scan(probe, scan, CaseOptions(axis=plane, window="800/350"))
        left, top = LEFT_AND_TOP[plane]
        assert len(probe.pictures) == EXTENT[NORMAL[plane]]
        for picture in probe.pictures:
            assert picture.shape == (EXTENT[top], EXTENT[left]), plane
            for (row, col), (on_left, on_top) in CORNERS.items():
                octant = octant_of[int(picture[row, col])]
                assert (octant // OCTANT_WEIGHT[left] % 2, octant // OCTANT_WEIGHT[top] % 2) == (on_left, on_top), \
                    (plane, row, col)
        # The maps went back into the scan's own voxel grid: every voxel holds its own brightness.
        np.testing.assert_allclose(prediction.map, mapping(scan.array) / 255.0, atol=1e-6)


def test_insert_slice_undoes_extract_slice():
    volume = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    affine = np.array([[0, 0, -2.0, 0], [-1.5, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])
    for plane in PLANES:
        layout = plane_layout(plane, affine)
        rebuilt = np.zeros_like(volume)
        for index in range(volume.shape[layout.slice_axis]):
            insert_slice(rebuilt, layout, index, extract_slice(volume, layout, index))
        np.testing.assert_array_equal(rebuilt, volume)


def test_extract_slice_is_a_contiguous_copy_in_either_storage_order():
    """nibabel returns Fortran-ordered arrays: the pictures are the same as from C order, and are copies."""
    volume = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    fortran = np.asfortranarray(volume)
    affine = np.array([[0, 0, -2.0, 0], [-1.5, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]])
    for plane in PLANES:
        layout = plane_layout(plane, affine)
        for index in range(volume.shape[layout.slice_axis]):
            picture = extract_slice(fortran, layout, index)
            np.testing.assert_array_equal(picture, extract_slice(volume, layout, index))
            assert picture.flags.c_contiguous
            picture[...] = -1
    np.testing.assert_array_equal(fortran, volume)
