"""Radiological orientation: how any plane of a volume is laid out as a picture, whatever the storage order.

The model and the viewer see the same picture, derived from the scan's RAS affine rather than from its
voxel order, so a study stored as RAS NIfTI, LPS NIfTI, a DICOM series or a dcm2niix NIfTI (rows
flipped) gives the same pictures, hence the same scores:
- axial: patient right on the picture's left, anterior at the top (viewed from the feet);
- coronal: patient right on the left, superior at the top (viewed from the front);
- sagittal: anterior on the left, superior at the top (viewed from the patient's left).
This is the convention of PACS viewers, OHIF and 3D Slicer. `extract_slice` cuts a picture out of a
volume and `insert_slice` puts a picture-shaped result (an anomaly map) back into the volume's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medclip_ad.config import PLANE_NORMALS

# Per plane, the RAS world axis that runs left to right on screen and the one that runs top to bottom,
# each with the sign of the world direction it runs along (-1: towards decreasing R, A or S).
SCREEN_AXES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "axial": ((0, -1), (1, -1)),
    "coronal": ((0, -1), (2, -1)),
    "sagittal": ((1, -1), (2, -1)),
}
# The patient side each RAS world axis points to, in its positive and its negative direction.
WORLD_AXIS_LETTERS: tuple[tuple[str, str], ...] = (("R", "L"), ("A", "P"), ("S", "I"))


@dataclass(frozen=True)
class PlaneLayout:
    """How one plane of a volume maps onto a picture: which array axes become rows and columns,
    whether they run backwards, and the millimetres each step covers."""

    plane: str
    slice_axis: int
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    row_mm: float
    col_mm: float


@dataclass(frozen=True)
class ScreenLabels:
    """The patient side at each edge of the picture, shown beside it so orientation is never guessed."""

    left: str
    right: str
    top: str
    bottom: str


def slice_axis_for_plane(plane: str, affine: np.ndarray | None) -> int:
    """The array axis whose direction is closest to the plane's normal (identity geometry if unknown)."""
    if plane not in PLANE_NORMALS:
        raise ValueError(f"unknown plane {plane!r} (choose from {', '.join(PLANE_NORMALS)})")
    return int(np.argmax(_direction_weights(affine)[PLANE_NORMALS[plane]]))


def plane_of_axis(axis: int, affine: np.ndarray | None) -> str:
    """The anatomical plane that slicing along an array axis shows."""
    world_axis = int(np.argmax(_direction_weights(affine)[:, axis]))
    return {normal: name for name, normal in PLANE_NORMALS.items()}[world_axis]


def _direction_weights(affine: np.ndarray | None) -> np.ndarray:
    """|cosine| between world axes (rows) and array axes (columns)."""
    if affine is None:
        return np.eye(3)
    rotation = np.asarray(affine, dtype=np.float64)[:3, :3]
    return np.abs(rotation / np.linalg.norm(rotation, axis=0, keepdims=True))


def plane_layout(plane: str, affine: np.ndarray | None) -> PlaneLayout:
    """Place a plane of an (I, J, K) volume in radiological orientation, from its RAS affine.

    The in-plane array axis closest to the plane's horizontal world axis becomes the columns, the other
    the rows; an axis runs backwards when its world direction opposes the picture's.
    """
    rotation = np.eye(3) if affine is None else np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(rotation, axis=0)
    cosines = rotation / spacing
    slice_axis = slice_axis_for_plane(plane, affine)
    in_plane = [axis for axis in range(3) if axis != slice_axis]
    (world_h, sign_h), (world_v, sign_v) = SCREEN_AXES[plane]
    col_axis = max(in_plane, key=lambda axis: abs(cosines[world_h, axis]))
    row_axis = next(axis for axis in in_plane if axis != col_axis)
    return PlaneLayout(
        plane=plane,
        slice_axis=slice_axis,
        row_axis=row_axis,
        col_axis=col_axis,
        flip_rows=bool(np.sign(cosines[world_v, row_axis]) == -sign_v),
        flip_cols=bool(np.sign(cosines[world_h, col_axis]) == -sign_h),
        row_mm=float(spacing[row_axis]),
        col_mm=float(spacing[col_axis]),
    )


def screen_labels(plane: str) -> ScreenLabels:
    """The patient sides at the edges of a plane laid out by `plane_layout`."""
    (world_h, sign_h), (world_v, sign_v) = SCREEN_AXES[plane]

    def towards(world: int, sign: int) -> str:
        return WORLD_AXIS_LETTERS[world][0 if sign > 0 else 1]

    return ScreenLabels(left=towards(world_h, -sign_h), right=towards(world_h, sign_h),
                        top=towards(world_v, -sign_v), bottom=towards(world_v, sign_v))


def extract_slice(volume: np.ndarray, layout: PlaneLayout, index: int) -> np.ndarray:
    """Slice `index` along the layout's slice axis as a (rows, columns) picture in radiological orientation.

    For a 2-D image layout (slice axis -1) the image itself is returned (colour channels kept).
    """
    if layout.slice_axis < 0:
        return np.asarray(volume)
    return np.ascontiguousarray(_oriented(_cut(np.asarray(volume), layout, index), layout))


def insert_slice(volume: np.ndarray, layout: PlaneLayout, index: int, picture: np.ndarray) -> None:
    """Write a (rows, columns) picture of slice `index`, as `extract_slice` laid it out, back into `volume`."""
    _oriented(_cut(volume, layout, index), layout)[...] = picture


def _cut(volume: np.ndarray, layout: PlaneLayout, index: int) -> np.ndarray:
    """A view of slice `index` along the slice axis.

    A view, not `np.take`: on the Fortran-ordered arrays nibabel returns, `np.take` along the last axis copied
    a 512 x 512 slice in 117 ms against 0.6 ms for this view's copy (8 s of a 36 s 64-slice `infer`).
    """
    selector: list[slice | int] = [slice(None)] * volume.ndim
    selector[layout.slice_axis] = index
    return volume[tuple(selector)]


def _oriented(cut: np.ndarray, layout: PlaneLayout) -> np.ndarray:
    """A view of a 2-D cut in picture orientation (writing through it writes the cut)."""
    remaining = [axis for axis in range(3) if axis != layout.slice_axis]
    if remaining.index(layout.row_axis) == 1:
        cut = cut.T
    if layout.flip_rows:
        cut = cut[::-1, :]
    if layout.flip_cols:
        cut = cut[:, ::-1]
    return cut
