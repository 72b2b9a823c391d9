"""From a thresholded anomaly map to findings: a lesion mask and its connected components, measured.

A volume's components are 3-D and 26-connected (a lesion spanning slices is one finding), measured in
the scan's millimetres through its affine: volume in mL, the largest distance between two voxel centres
(the diameter), the centroid in DICOM patient coordinates (LPS, the frame PACS measurements use), the
peak and mean map value, the peak voxel and the slices spanned along the scored axis. A 2-D image has
no known pixel size, so its components (8-connected) are measured in pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

# RAS (the affine's world frame) to LPS (DICOM's patient frame): flip the first two axes.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
# Points compared with all others per step when measuring a diameter.
_PAIR_ROWS = 256


@dataclass(frozen=True)
class VolumeComponent:
    """One 3-D finding, in mm and mL; `peak_voxel` is its highest map value's (i, j, k) index."""

    label: int  # 1 = the largest
    voxels: int
    volume_ml: float
    largest_diameter_mm: float
    centroid_lps_mm: tuple[float, float, float]
    peak_score: float
    mean_score: float
    peak_voxel: tuple[int, int, int]
    peak_slice: int  # index along the scored axis
    first_slice: int
    last_slice: int
    slices_spanned: int
    source_slices: tuple[int, int]  # first and last index along the third array axis (a DICOM series' files)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageComponent:
    """One 2-D finding in pixels; `centroid_px` and `peak_px` are (row, column)."""

    label: int
    pixels: int
    largest_diameter_px: float
    centroid_px: tuple[float, float]
    peak_score: float
    mean_score: float
    peak_px: tuple[int, int]

    def to_json(self) -> dict:
        return asdict(self)


def lesion_mask(map_values: np.ndarray, threshold: float) -> np.ndarray:
    """Where the map exceeds the calibrated pixel/voxel threshold."""
    return np.asarray(map_values) > threshold


def volume_components(map_volume: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                      slice_axis: int) -> list[VolumeComponent]:
    """The mask's 26-connected components measured in the affine's mm, largest first."""
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    components = []
    for indices, values in _labelled_regions(mask, map_volume):
        world = indices @ affine[:3, :3].T + affine[:3, 3]
        peak = int(np.argmax(values))
        along = indices[:, slice_axis]
        components.append(VolumeComponent(
            label=0, voxels=len(values), volume_ml=len(values) * voxel_ml, largest_diameter_mm=_diameter(world),
            centroid_lps_mm=tuple(float(v) for v in RAS_TO_LPS @ world.mean(axis=0)),
            peak_score=float(values[peak]), mean_score=float(values.mean()),
            peak_voxel=tuple(int(v) for v in indices[peak]), peak_slice=int(along[peak]),
            first_slice=int(along.min()), last_slice=int(along.max()),
            slices_spanned=int(np.unique(along).size),
            source_slices=(int(indices[:, 2].min()), int(indices[:, 2].max()))))
    components.sort(key=lambda c: (-c.voxels, -c.peak_score))
    return [VolumeComponent(**{**asdict(c), "label": number}) for number, c in enumerate(components, start=1)]


def image_components(map_image: np.ndarray, mask: np.ndarray) -> list[ImageComponent]:
    """The mask's 8-connected components in pixels, largest first."""
    components = []
    for indices, values in _labelled_regions(mask, map_image):
        peak = int(np.argmax(values))
        components.append(ImageComponent(
            label=0, pixels=len(values), largest_diameter_px=_diameter(indices.astype(np.float64)),
            centroid_px=tuple(float(v) for v in indices.mean(axis=0)), peak_score=float(values[peak]),
            mean_score=float(values.mean()), peak_px=tuple(int(v) for v in indices[peak])))
    components.sort(key=lambda c: (-c.pixels, -c.peak_score))
    return [ImageComponent(**{**asdict(c), "label": number}) for number, c in enumerate(components, start=1)]


def _labelled_regions(mask: np.ndarray, map_values: np.ndarray):
    """(indices (n, ndim), map values (n,)) of each fully connected region; labelled in the mask's bounding
    box only, since findings are small and labelling a whole CT series is not."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    box = tuple(slice(int(hits.min()), int(hits.max()) + 1) for hits in np.nonzero(mask))
    offset = np.array([part.start for part in box])
    labels, _ = ndimage.label(mask[box], structure=np.ones((3,) * mask.ndim, dtype=bool))
    values = np.asarray(map_values)[box]
    for region, where in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[where] == region
        local = np.argwhere(inside) + np.array([part.start for part in where])
        yield local + offset, values[where][inside]


def _diameter(points: np.ndarray) -> float:
    """The largest distance between two points, over their convex hull's vertices when there are many."""
    if len(points) > 3:
        try:
            points = points[ConvexHull(points, qhull_options="QJ").vertices]
        except (QhullError, ValueError):  # all on one line: every point may be an end
            pass
    largest = 0.0
    for start in range(0, len(points), _PAIR_ROWS):  # rows at a time, so a large hull stays small in memory
        difference = points[start:start + _PAIR_ROWS, None, :] - points[None, :, :]
        largest = max(largest, float((difference ** 2).sum(axis=-1).max()))
    return float(np.sqrt(largest))
