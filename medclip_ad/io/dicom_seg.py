"""The lesion mask as a DICOM Segmentation, so a PACS shows the thresholded findings on the scan itself.

One binary segment ("anomalous tissue above the calibrated threshold") on the source series' grid, one
frame per source slice that holds some of it, each referencing its slice; patient and study from the
source files, in a new series of the run (`DerivedSeries`).
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from medclip_ad.errors import UserInputError
from medclip_ad.io.dicom_export import (
    DerivedSeries,
    algorithm_identification,
    check_placeable,
    dicom_source_files,
    source_headers,
)
from medclip_ad.io.scan import Scan
from medclip_ad.io.writers import atomic_write

SEGMENT_LABEL: str = "anomaly above threshold"
SEGMENT_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
SEGMENT_TYPE = codes.SCT.Lesion


def write_segmentation(mask: np.ndarray, scan: Scan, path: Path, *, model: dict, operating_point: str,
                       series: DerivedSeries) -> hd.seg.Segmentation:
    """Save a (column, row, slice) boolean mask of a DICOM series as a binary Segmentation; returns it, so an
    SR can reference its segment."""
    files = dicom_source_files(scan)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != scan.array.shape or len(files) != mask.shape[2]:
        raise UserInputError(f"{scan.source}: a segmentation needs one DICOM file per slice and the mask on the "
                             f"scan's grid (mask {mask.shape}, scan {scan.array.shape}, {len(files)} files)")
    sources = source_headers(files)
    check_placeable(sources[0], scan, "a segmentation")
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=SEGMENT_CATEGORY,
        segmented_property_type=SEGMENT_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(model),
        tracking_uid=hd.UID(),
        tracking_id=f"anomaly mask at FPR {operating_point}",
    )
    try:
        segmentation = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            **series.new_instance("segmentation"),
            content_label="LESIONS",
            omit_empty_frames=bool(mask.any()),
        )
    except ValueError as exc:  # what highdicom refuses in a source series the reader accepted
        raise UserInputError(f"{scan.source}: cannot write a DICOM segmentation ({exc})") from exc
    series.stamp(segmentation, sources[0], "segmentation")
    with atomic_write(path) as temporary:
        segmentation.save_as(temporary)
    return segmentation
