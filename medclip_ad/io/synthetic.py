"""A synthetic head CT with a round lesion on known slices, as a DICOM series and as NIfTI.

`medclip-ad demo` needs a study anyone can run without patient data, and the tests need one whose
truth is known: where the lesion is, which slices it touches, and what geometry both files must share.
The phantom is built in Hounsfield units (air, scalp, skull, grey and white matter, ventricles, a
bright or dark spherical lesion) and written twice: as a valid CT Image Storage series (one file per
axial slice, stored as unsigned 12-bit with RescaleIntercept -1024, patient "ANONYMOUS^DEMO") and as an
int16 NIfTI with the matching RAS affine, so both inputs read back to the same array and geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from medclip_ad.errors import UserInputError
from medclip_ad.io.writers import SCANNER_XFORM_CODE, atomic_write

DEMO_PATIENT_NAME: str = "ANONYMOUS^DEMO"
DEMO_PATIENT_ID: str = "DEMO0001"

# Stored pixel = HU - RESCALE_INTERCEPT as unsigned 12-bit, the most common CT encoding.
RESCALE_INTERCEPT: float = -1024.0
STORED_BITS: int = 12

# Phantom tissues in HU.
AIR_HU, SCALP_HU, BONE_HU, GREY_HU, WHITE_HU, CSF_HU = -1000.0, 40.0, 1000.0, 38.0, 28.0, 5.0
NOISE_HU: float = 4.0

# Head ellipsoid semi-axes in mm (left-right, anterior-posterior, superior-inferior) and shell depths.
HEAD_SEMI_AXES_MM: tuple[float, float, float] = (72.0, 90.0, 85.0)
SCALP_MM, SKULL_MM, CORTEX_MM = 4.0, 6.0, 10.0
# Each lateral ventricle: an ellipsoid this far left and right of the midline, and its semi-axes (mm).
VENTRICLE_CENTRE_MM: tuple[float, float, float] = (9.0, -5.0, 10.0)
VENTRICLE_SEMI_AXES_MM: tuple[float, float, float] = (5.0, 20.0, 12.0)

# Identity of the slice plane in DICOM patient space (LPS): rows along +x, columns along +y: axial.
AXIAL_ORIENTATION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SyntheticLesion:
    """A sphere: centre as fractions (0..1) of the array extent along (column, row, slice), radius in
    mm, and density in HU (above brain, e.g. 100, for a bright enhancing or bleeding lesion; below, e.g. 5,
    for a dark infarct-like one)."""

    center: tuple[float, float, float] = (0.35, 0.45, 0.5)
    radius_mm: float = 12.0
    hu: float = 100.0


@dataclass(frozen=True)
class SyntheticStudy:
    """Where the study was written and the truth about it.

    `volume_hu` (int16 HU) and `lesion_mask` are (column, row, slice) arrays, the layout `read_case` returns;
    `affine` is their RAS affine; `lesion_slices` are the slice indices (third axis) the lesion touches.
    """

    dicom_dir: Path
    nifti_path: Path
    mask_path: Path
    lesion_slices: tuple[int, ...]
    volume_hu: np.ndarray = field(repr=False)
    lesion_mask: np.ndarray = field(repr=False)
    affine: np.ndarray = field(repr=False)
    series_uid: str = ""


def make_synthetic_study(
    out_dir: Path,
    shape: tuple[int, int, int] = (128, 128, 32),
    spacing: tuple[float, float, float] = (1.6, 1.6, 4.0),
    lesion: SyntheticLesion = SyntheticLesion(),
    seed: int = 0,
) -> SyntheticStudy:
    """Write `out_dir/dicom/` (one CT file per slice), `out_dir/synthetic_ct.nii.gz` and
    `out_dir/lesion_mask.nii.gz`; `shape` and `spacing` are (columns, rows, slices) and mm.

    Refuses a non-empty `out_dir/dicom/`, since slices of another series there would become a second
    case in the same folder.
    """
    out_dir = Path(out_dir)
    dicom_dir = out_dir / "dicom"
    if dicom_dir.exists() and any(dicom_dir.iterdir()):
        raise UserInputError(f"{dicom_dir}: already exists and is not empty; choose another output folder")
    affine_lps = _centred_affine(shape, spacing)
    volume_hu, lesion_mask = _phantom(shape, affine_lps, lesion, np.random.default_rng(seed))
    series_uid = _write_ct_series(volume_hu, affine_lps, spacing, dicom_dir)
    affine = _LPS_TO_RAS @ affine_lps
    nifti_path = _write_nifti(volume_hu, affine, out_dir / "synthetic_ct.nii.gz")
    mask_path = _write_nifti(lesion_mask.astype(np.uint8), affine, out_dir / "lesion_mask.nii.gz")
    lesion_slices = tuple(int(k) for k in np.flatnonzero(lesion_mask.any(axis=(0, 1))))
    return SyntheticStudy(dicom_dir, nifti_path, mask_path, lesion_slices, volume_hu, lesion_mask, affine, series_uid)


def _centred_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Axial LPS affine of a volume centred on the patient-space origin."""
    steps = np.array(spacing, dtype=np.float64)
    affine = np.diag([*steps, 1.0])
    affine[:3, 3] = -0.5 * (np.array(shape) - 1) * steps
    return affine


def _phantom(
    shape: tuple[int, int, int], affine_lps: np.ndarray, lesion: SyntheticLesion, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The head in HU (int16, as both files store it) and the lesion mask, on the (column, row, slice) grid."""
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij"), axis=-1)
    xyz = grid @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    semi = np.array(HEAD_SEMI_AXES_MM)

    def inside(depth_mm: float) -> np.ndarray:
        return (((xyz / (semi - depth_mm)) ** 2).sum(axis=-1)) <= 1.0

    volume = np.full(shape, AIR_HU)
    volume[inside(0.0)] = SCALP_HU
    volume[inside(SCALP_MM)] = BONE_HU
    brain = inside(SCALP_MM + SKULL_MM)
    volume[brain] = GREY_HU
    volume[inside(SCALP_MM + SKULL_MM + CORTEX_MM)] = WHITE_HU
    for side in (-1.0, 1.0):
        centre = np.array(VENTRICLE_CENTRE_MM) * [side, 1.0, 1.0]
        volume[(((xyz - centre) / VENTRICLE_SEMI_AXES_MM) ** 2).sum(axis=-1) <= 1.0] = CSF_HU
    centre_mm = affine_lps[:3, :3] @ ((np.array(shape) - 1) * np.array(lesion.center)) + affine_lps[:3, 3]
    mask = (np.linalg.norm(xyz - centre_mm, axis=-1) <= lesion.radius_mm) & brain
    volume[mask] = lesion.hu
    volume[volume > AIR_HU] += rng.normal(0.0, NOISE_HU, size=int((volume > AIR_HU).sum()))
    hu = np.rint(volume).clip(RESCALE_INTERCEPT, RESCALE_INTERCEPT + 2**STORED_BITS - 1).astype(np.int16)
    return hu, mask


def _write_ct_series(
    volume_hu: np.ndarray, affine_lps: np.ndarray, spacing: tuple[float, float, float], dicom_dir: Path
) -> str:
    """One CT Image Storage file per slice, named in slice order; returns the SeriesInstanceUID."""
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    stored = (volume_hu.astype(np.float64) - RESCALE_INTERCEPT).astype(np.uint16)
    for k in range(volume_hu.shape[2]):
        position = affine_lps[:3, :3] @ [0.0, 0.0, float(k)] + affine_lps[:3, 3]
        ds = _ct_slice_header(study_uid, series_uid, frame_uid, spacing, position, k)
        ds.Rows, ds.Columns = volume_hu.shape[1], volume_hu.shape[0]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<u2").tobytes()
        with atomic_write(dicom_dir / f"CT{k + 1:04d}.dcm") as temporary:
            ds.save_as(temporary, enforce_file_format=True)
    return str(series_uid)


def _ct_slice_header(
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    spacing: tuple[float, float, float],
    position: np.ndarray,
    index: int,
) -> Dataset:
    """Everything but the pixels of one slice: identity, geometry, pixel encoding and display hints."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = DEMO_PATIENT_NAME, DEMO_PATIENT_ID, "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20000101", "000000", "1", ""
    ds.ReferringPhysicianName, ds.StudyDescription = "", "medclip-ad synthetic head CT"
    ds.Modality, ds.Manufacturer, ds.SeriesNumber = "CT", "medclip-ad synthetic phantom", 1
    ds.SeriesDescription = "synthetic head CT with lesion"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.InstanceNumber, ds.PatientPosition, ds.PositionReferenceIndicator = index + 1, "HFS", ""
    ds.ImagePositionPatient = [format_number_as_ds(float(v)) for v in position]
    ds.ImageOrientationPatient = [format_number_as_ds(v) for v in AXIAL_ORIENTATION]
    ds.PixelSpacing = [format_number_as_ds(float(spacing[1])), format_number_as_ds(float(spacing[0]))]
    ds.SliceThickness = ds.SpacingBetweenSlices = format_number_as_ds(float(spacing[2]))
    ds.SliceLocation = format_number_as_ds(float(position[2]))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, STORED_BITS, STORED_BITS - 1, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = format_number_as_ds(RESCALE_INTERCEPT), "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "80"
    ds.KVP = "120"
    return ds


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """An integer NIfTI with scanner-space sform and qform."""
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=SCANNER_XFORM_CODE)
    image.set_qform(affine, code=SCANNER_XFORM_CODE)
    with atomic_write(path) as temporary:
        nib.save(image, temporary)
    return path
