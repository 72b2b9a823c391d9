"""The case's findings as a DICOM Structured Report (TID 1500 measurement report, Comprehensive 3D SR).

A PACS worklist can show the verdict without opening images: one measurement group for the case (its
score, the operating point's false-positive rate and threshold, the verdict, the percentile among the
calibration normals) and one per lesion component (volume, largest diameter, peak and mean score,
with the centroid as a 3-D point and references to the source slices it spans). The algorithm's
identification carries the model provenance. The image library lists the source slices, with their
modality and geometry, as TID 1500 asks.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from medclip_ad import __version__
from medclip_ad.io.dicom_export import (
    ANOMALY_SCORE,
    MANUFACTURER,
    MODEL_NAME,
    PRIVATE_CODING_SCHEME,
    SCORE_UNIT,
    DerivedSeries,
    dicom_source_files,
    source_headers,
)
from medclip_ad.io.scan import Scan
from medclip_ad.io.writers import atomic_write

ANOMALY_DETECTION = Code("ANOMALY_DETECT", PRIVATE_CODING_SCHEME, "Zero-shot anomaly detection")
OPERATING_POINT_FPR = Code("OP_POINT_FPR", PRIVATE_CODING_SCHEME, "False-positive rate of operating point")
SCORE_THRESHOLD = Code("SCORE_THRESHOLD", PRIVATE_CODING_SCHEME, "Anomaly score threshold")
NORMALS_PERCENTILE = Code("NORMAL_PCTILE", PRIVATE_CODING_SCHEME, "Percentile among calibration normals")
VERDICT = Code("ANOMALY_VERDICT", PRIVATE_CODING_SCHEME, "Anomaly verdict at operating point")
PEAK_SCORE = Code("PEAK_SCORE", PRIVATE_CODING_SCHEME, "Peak anomaly score")
MEAN_SCORE = Code("MEAN_SCORE", PRIVATE_CODING_SCHEME, "Mean anomaly score")
PERCENT = Code("%", "UCUM", "percent")
MILLILITRE = Code("ml", "UCUM", "milliliter")
MILLIMETRE = Code("mm", "UCUM", "millimeter")
# One observer UID for the software, the same in every report it writes.
DEVICE_UID = generate_uid(entropy_srcs=[MANUFACTURER, MODEL_NAME])


def write_structured_report(scan: Scan, document: dict, path: Path, *, series: DerivedSeries,
                            segmentation: Dataset | None = None) -> None:
    """Save a scores.json document (with its calibration fields when it has them) as a TID 1500 report."""
    files = dicom_source_files(scan)
    sources = source_headers(files)
    algorithm = hd.sr.AlgorithmIdentification(
        name=f"{MANUFACTURER} {document['model'].get('method')}", version=__version__,
        parameters=[f"{key}={value}" for key, value in document["model"].items() if value is not None])
    groups = [_case_group(document, algorithm)]
    for component in document.get("components", []):
        groups.append(_component_group(component, algorithm, sources))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID, name=MODEL_NAME, manufacturer_name=MANUFACTURER, model_name=MODEL_NAME))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=ANOMALY_DETECTION, imaging_measurements=groups, referenced_images=sources)
    evidence = sources + ([segmentation] if segmentation is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=series.number("report"),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description=series.description("report"))
    sr.CodingSchemeIdentificationSequence = [hd.coding_schemes.CodingSchemeIdentificationItem(
        PRIVATE_CODING_SCHEME, name=f"{MANUFACTURER} codes")]
    series.stamp(sr, sources[0], "report")
    with atomic_write(path) as temporary:
        sr.save_as(temporary)


def _case_group(document: dict,
                algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [hd.sr.Measurement(name=ANOMALY_SCORE, value=float(document["score"]), unit=SCORE_UNIT,
                                      algorithm_id=algorithm)]
    evaluations = []
    if "flagged" in document:
        measurements += [
            hd.sr.Measurement(name=OPERATING_POINT_FPR, value=100.0 * float(document["calibration"]["fpr"]),
                              unit=PERCENT),
            hd.sr.Measurement(name=SCORE_THRESHOLD, value=float(document["threshold"]), unit=SCORE_UNIT),
            hd.sr.Measurement(name=NORMALS_PERCENTILE, value=float(document["percentile"]), unit=PERCENT)]
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=VERDICT, value=codes.SCT.Abnormal if document["flagged"] else codes.SCT.Normal))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="case"), algorithm_id=algorithm,
        measurements=measurements, qualitative_evaluations=evaluations or None)


def _component_group(component: dict, algorithm: hd.sr.AlgorithmIdentification,
                     sources: list[Dataset]) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    first, last = component["source_slices"]
    slices = [hd.sr.SourceImageForMeasurement(source.SOPClassUID, source.SOPInstanceUID)
              for source in sources[first:last + 1]]

    def measurement(name: Code, value: float, unit: Code, **extra) -> hd.sr.Measurement:
        return hd.sr.Measurement(name=name, value=float(value), unit=unit, referenced_images=slices, **extra)

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"component {component['label']}"),
        finding_type=codes.SCT.Lesion, algorithm_id=algorithm,
        measurements=[measurement(codes.SCT.Volume, component["volume_ml"], MILLILITRE),
                      measurement(codes.SCT.Diameter, component["largest_diameter_mm"], MILLIMETRE),
                      measurement(PEAK_SCORE, component["peak_score"], SCORE_UNIT),
                      measurement(MEAN_SCORE, component["mean_score"], SCORE_UNIT)])
