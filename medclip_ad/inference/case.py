"""One case from scan to output folder: the same steps for `infer`, the demo, the bundle and the viewer.

A 2-D image is scored as it is; a volume slice by slice. Outputs follow the product's output contract
(scores.json; anomaly_map.npy + overlay.png for images; anomaly_map.nii.gz + overlays/ for volumes)
and appear in `out_dir/<case>` only once complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medclip_ad import __version__
from medclip_ad.config import CaseOptions
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case_folder import check_case_folder_free, staged_case_folder
from medclip_ad.inference.lesions import image_components, lesion_mask, volume_components
from medclip_ad.inference.overlay import OverlayStyle, overlay
from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor
from medclip_ad.inference.volume import infer_volume, top_slices, volume_score
from medclip_ad.io.dicom_export import (
    DerivedSeries,
    dicom_source_files,
    source_slice_overlays,
    write_parametric_map,
    write_secondary_capture,
)
from medclip_ad.io.dicom_seg import write_segmentation
from medclip_ad.io.dicom_sr import write_structured_report
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.orientation import PlaneLayout, extract_slice, plane_layout, plane_of_axis
from medclip_ad.io.scan import Scan
from medclip_ad.io.writers import write_json, write_npy, write_png, write_volume_map
from medclip_ad.output_files import SCORES_FILE


# scores.json key: the requested DICOM outputs that could not be written, and why.
DICOM_NOT_WRITTEN = "dicom_not_written"


def resolve_layout(scan: Scan, options: CaseOptions) -> PlaneLayout:
    """How a volume is sliced and laid out for the model: the chosen plane, else the acquisition plane."""
    return plane_layout(options.axis or plane_of_axis(scan.slice_axis, scan.affine), scan.affine)


def resolve_slice_axis(scan: Scan, options: CaseOptions) -> int:
    """The array axis a volume is sliced along (for progress totals before scoring)."""
    return resolve_layout(scan, options).slice_axis


@dataclass
class ScanPrediction:
    """A scan's score and its map in the scan's own grid (float32, never normalised).

    For a volume also each slice's score, the array axis it was sliced along and the layout of the
    pictures the model saw. `mapping` is how the stored values were brought to 8 bits, for drawing
    overlays of what the model saw.
    """

    score: float
    map: np.ndarray
    mapping: IntensityMapping
    slice_scores: np.ndarray | None = None
    axis: int | None = None
    layout: PlaneLayout | None = None


def predict_scan(predictor: AnomalyPredictor, scan: Scan, options: CaseOptions = CaseOptions(),
                 progress: Callable[[int], None] | None = None) -> ScanPrediction:
    """Score a scan as `infer` does, without writing anything: the Python API for images and volumes alike.

    `progress` is called with the number of slices finished after each batch (volumes only).
    """
    mapping = IntensityMapping.from_scan(scan, window=options.window, modality=options.modality)
    if scan.kind == "image":
        prediction = predictor.predict([mapping(scan.array)])
        return ScanPrediction(float(prediction.scores[0]), prediction.maps[0].astype(np.float32), mapping)
    layout = resolve_layout(scan, options)
    result = infer_volume(predictor, scan.array, layout, mapping, progress)
    return ScanPrediction(volume_score(result.slice_scores, options.aggregation, options.top_k), result.map_volume,
                          mapping, result.slice_scores, layout.slice_axis, layout)


def run_case(predictor: AnomalyPredictor, scan: Scan, out_dir: Path, options: CaseOptions = CaseOptions(),
             progress: Callable[[int], None] | None = None) -> dict:
    """Score a scan and write its case folder; returns the scores.json document."""
    check_case(scan, out_dir, options)
    return write_case(predictor, scan, predict_scan(predictor, scan, options, progress), out_dir, options)


def check_case(scan: Scan, out_dir: Path, options: CaseOptions = CaseOptions()) -> None:
    """Refuse, before any model time is spent on it, a scan whose outputs could not be written."""
    if options.dicom_out:
        dicom_source_files(scan)
    if options.calibration:
        options.calibration.check_kind(scan.kind, scan.source)
    check_case_folder_free(out_dir, scan.name, options.overwrite)


def write_case(predictor: AnomalyPredictor, scan: Scan, prediction: ScanPrediction, out_dir: Path,
               options: CaseOptions = CaseOptions()) -> dict:
    """Write a scored scan's case folder (the output contract), atomically; returns the scores.json document.

    `predictor` is the one that scored it: its provenance goes into scores.json.
    """
    with staged_case_folder(out_dir, scan.name, options.overwrite) as folder:
        findings, mask = _findings(scan, prediction, options, folder)
        if scan.kind == "image":
            document = _write_image_case(predictor, scan, prediction, folder)
        else:
            document = _write_volume_case(predictor, scan, prediction, folder, options)
        document.update(findings)
        document.update(_provenance(predictor, scan, prediction.mapping))
        if scan.kind == "volume" and options.dicom_out:
            _write_dicom(predictor, scan, prediction, folder, options, document, mask)
        write_json(folder / SCORES_FILE, document)
    return document


def _write_image_case(predictor: AnomalyPredictor, scan: Scan, prediction: ScanPrediction, folder: Path) -> dict:
    write_npy(folder / "anomaly_map.npy", prediction.map)
    write_png(folder / "overlay.png", overlay(prediction.mapping(scan.array), prediction.map, _style(predictor)))
    return {"case": scan.name, "input": str(Path(scan.source).resolve()), "kind": "image", "score": prediction.score,
            "slice_axis": None}


def _findings(scan: Scan, prediction: ScanPrediction, options: CaseOptions,
              folder: Path) -> tuple[dict, np.ndarray | None]:
    """With a calibration: the verdict, the lesion mask (written into the folder) and its components."""
    calibration = options.calibration
    if calibration is None:
        return {}, None
    document = calibration.decision(prediction.score, calibration.operating_point(options.operating_point))
    mask = lesion_mask(prediction.map, calibration.pixel_threshold)
    if scan.kind == "image":
        write_npy(folder / "lesion_mask.npy", mask.astype(np.uint8))
        components = [c.to_json() for c in image_components(prediction.map, mask)]
    else:
        write_volume_map(mask, scan, folder / "lesion_mask.nii.gz", dtype=np.uint8)
        components = [c.to_json() for c in volume_components(prediction.map, mask, scan.affine, prediction.axis)]
    return {**document, "components": components}, mask


def _write_volume_case(predictor: AnomalyPredictor, scan: Scan, prediction: ScanPrediction, folder: Path,
                       options: CaseOptions) -> dict:
    axis, slice_scores = prediction.axis, prediction.slice_scores
    layout = prediction.layout
    write_volume_map(prediction.map, scan, folder / "anomaly_map.nii.gz")
    best = top_slices(slice_scores, options.overlay_count)
    (folder / "overlays").mkdir()
    for index in best:  # drawn as the model saw them: radiological orientation
        image = prediction.mapping(extract_slice(scan.array, layout, index))
        slice_map = extract_slice(prediction.map, layout, index)
        write_png(folder / "overlays" / f"slice_{index:04d}.png", overlay(image, slice_map, _style(predictor)))
    return {"case": scan.name, "input": str(Path(scan.source).resolve()), "kind": "volume", "score": prediction.score,
            "score_aggregation": options.aggregation if options.aggregation != "topk_mean"
            else f"topk_mean(k={options.top_k})",
            "slice_axis": plane_of_axis(axis, scan.affine), "slice_axis_index": axis,
            "slice_scores": [float(s) for s in slice_scores], "top_slices": best, "shape": list(scan.array.shape),
            **_volume_of_series(scan)}


def missing_outputs(document: dict, folder: Path) -> list[str]:
    """One line for each requested output a written case lacks, and why (see DICOM_NOT_WRITTEN)."""
    return [f"{document['input']}: {output.replace('_', ' ')} not written ({reason}); the rest of the case was "
            f"written to {folder}" for output, reason in document.get(DICOM_NOT_WRITTEN, {}).items()]


def _volume_of_series(scan: Scan) -> dict:
    """Which volume of a 4-D input was scored: without it the input path alone does not name the scan."""
    index = scan.metadata.get("volume_index")
    return {} if index is None else {"volume_index": int(index)}


def _write_dicom(predictor: AnomalyPredictor, scan: Scan, prediction: ScanPrediction, folder: Path,
                 options: CaseOptions, document: dict, mask: np.ndarray | None) -> None:
    """PACS outputs: the map as a Parametric Map and/or RGB overlays of whole source slices; with a calibration
    also the lesion mask as a Segmentation; always the findings as a Structured Report.

    With `both`, a source that cannot have a Parametric Map (no FrameOfReferenceUID, multi-frame) still gets
    the rest, and `document` says what it lacks and why (DICOM_NOT_WRITTEN).
    """
    series, map_volume = DerivedSeries(options.run_started), prediction.map
    if options.dicom_out in ("parametric-map", "both"):
        try:
            write_parametric_map(map_volume, scan, folder / "anomaly_map.dcm",
                                 map_range=(0.0, predictor.map_range),
                                 encoding=options.parametric_map_encoding, series=series)
        except UserInputError as error:
            if options.dicom_out != "both":
                raise
            document[DICOM_NOT_WRITTEN] = {"parametric_map": str(error).removeprefix(f"{scan.source}: ")}
    if options.dicom_out in ("secondary-capture", "both"):
        # Secondary captures show source slices; sliced along another axis, rank them by their map maximum.
        source_scores = prediction.slice_scores if prediction.axis == scan.slice_axis else map_volume.max(axis=(0, 1))
        slices = top_slices(source_scores, options.overlay_count)
        write_secondary_capture(source_slice_overlays(scan, map_volume, slices, prediction.mapping, _style(predictor)),
                                scan, folder / "dicom_overlays", series=series)
    segmentation = None
    if mask is not None and mask.any():
        segmentation = write_segmentation(mask, scan, folder / "lesion_seg.dcm", model=document["model"],
                                          operating_point=document["operating_point"], series=series)
    write_structured_report(scan, document, folder / "findings_sr.dcm", series=series, segmentation=segmentation)


def _provenance(predictor: AnomalyPredictor, scan: Scan, mapping: IntensityMapping) -> dict:
    document: dict = {"map_range": [0.0, predictor.map_range],
                      "intensity": mapping.description, "intensity_rule": mapping.rule,
                      "model": predictor.provenance(),
                      "package_version": __version__}
    if predictor.random_weights:
        document["warning"] = RANDOM_WEIGHTS_WARNING
    return document


def _style(predictor: AnomalyPredictor) -> OverlayStyle:
    return OverlayStyle(vmax=predictor.map_range)
