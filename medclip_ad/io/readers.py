"""Read one case (a DICOM series or file, a NIfTI file, a 2-D image) into a `Scan`, geometry intact.

Pixel decoding and geometry come from the libraries MONAI's image readers wrap (nibabel, ITK/GDCM, Pillow),
called as those readers call them and tested against them, never from hand-written parsing; one module
per format (`dicom_reader`, `nifti_reader`, `image_reader`). Array layouts and affines follow MONAI's
convention (RAS world millimetres; DICOM volumes as (column, row, slice)), so a map with the scan's shape,
saved with `scan.affine`, lies exactly on the input. MONAI itself (and torch) is imported only for the
rare inputs it is needed for, so reading a case, in the viewer say, stays light.

Every failure a user can cause becomes a `UserInputError` whose one line names the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib

from medclip_ad.errors import UserInputError
from medclip_ad.io.dicom_reader import read_dicom
from medclip_ad.io.discovery import CaseSource, discover_cases
from medclip_ad.io.image_reader import read_image
from medclip_ad.io.nifti_reader import NIFTI_ERRORS, read_nifti
from medclip_ad.io.read_checks import check_nifti_declared_sizes
from medclip_ad.io.scan import Scan
from medclip_ad.limits import MAX_VOXELS

__all__ = ["MAX_VOXELS", "nifti_volume_count", "read_case", "read_study"]


def read_case(source: CaseSource, volume_index: int | None = None) -> Scan:
    """Read a case into a `Scan` (stored values, geometry, modality, provenance).

    `volume_index` picks one volume of a 4-D NIfTI file (0-based) and is ignored for 3-D inputs, so one
    option can apply to a whole folder of mixed inputs.
    """
    if source.kind == "nifti":
        return read_nifti(source, volume_index)
    if source.kind == "image":
        return read_image(source)
    return read_dicom(source)


def read_study(path: Path, volume_index: int | None = None) -> Scan:
    """The one study at `path` (a NIfTI file, a DICOM file, or a folder holding one DICOM series).

    For manifest entries, which name exactly one study: a folder with several series is an error.
    """
    sources, problems = discover_cases([path])
    if problems:
        raise UserInputError(str(problems[0]))
    if len(sources) != 1:
        raise UserInputError(f"{path}: holds {len(sources)} studies (series or files); a volume entry names one")
    return read_case(sources[0], volume_index)


def nifti_volume_count(source: CaseSource) -> int:
    """How many 3-D volumes a case holds: more than one only for a 4-D NIfTI file (read from its header).

    An unreadable header counts as one: reading the case then reports what is wrong with the file.
    """
    if source.kind != "nifti":
        return 1
    try:
        check_nifti_declared_sizes(source.location)
        shape = nib.load(str(source.location)).shape
    except (UserInputError, *NIFTI_ERRORS):
        return 1
    return int(shape[3]) if len(shape) == 4 and shape[3] > 1 else 1
