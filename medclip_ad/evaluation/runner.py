"""One evaluation run: check the inputs, predict and score each manifest, draw its pictures, write the report.

One call evaluates one detector (a prompt checkpoint, or the `ensemble` method) on one or more manifests;
one manifest is one dataset, of 2-D images or of volumes, and its classes are the entries' `cls_name`.
An existing report is only replaced on request. Comparing several detectors means one call each, under
different `name`s (`evaluation_comparison` does that).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from PIL import Image

from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation.operating_points import operating_point_metrics
from medclip_ad.evaluation.plots import (
    CURVES_FOLDER,
    EXAMPLES_FOLDER,
    image_curve_pixels,
    write_curves,
    write_examples,
)
from medclip_ad.evaluation.predictions import predict, samples_by_class
from medclip_ad.evaluation.published import published_anomalyclip
from medclip_ad.evaluation.report import CASES_FILE, REPORT_FILE, RESULTS_FILE, write_report
from medclip_ad.evaluation.results import DatasetResult, EvaluationReport
from medclip_ad.evaluation.scoring import image_pixel_metrics, score_dataset, voxel_metrics
from medclip_ad.evaluation.volume_predictions import predict_volumes
from medclip_ad.inference.calibration import Calibration, case_scoring
from medclip_ad.inference.case import CaseOptions
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.writers import check_output_folder


def check_evaluation_inputs(manifests: list[Manifest], out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any model work, what would fail later: an existing report, an --out that cannot hold
    one, mixed kinds, missing files, 2-D masks of another size than their image."""
    check_output_folder(Path(out_dir))
    results = Path(out_dir) / RESULTS_FILE
    if results.exists() and not overwrite:
        raise UserInputError(f"{results}: already exists (pass --overwrite to replace it)")
    for name in (RESULTS_FILE, REPORT_FILE, CASES_FILE):
        if (Path(out_dir) / name).is_dir():
            raise UserInputError(f"{Path(out_dir) / name}: a folder is where the report file goes; move it away")
    for name in (CURVES_FOLDER, EXAMPLES_FOLDER):
        if (Path(out_dir) / name).exists() and not (Path(out_dir) / name).is_dir():
            raise UserInputError(f"{Path(out_dir) / name}: a file is where the report's folder goes; move it away")
    if not manifests:
        raise UserInputError("evaluation needs at least one manifest")
    for manifest in manifests:
        entries = [manifest.absolute(entry) for entry in manifest.entries("test")]
        name = manifest.dataset or "dataset"
        if not entries:
            raise UserInputError(f"{manifest.root}: the {name} manifest lists no test images")
        kinds = {entry.kind for entry in entries}
        if len(kinds) > 1:
            raise UserInputError(f"{manifest.root}: the {name} manifest mixes 2-D images and volumes; "
                                 f"evaluate them as two manifests")
        # A volume entry may be a DICOM series folder; its mask is a NIfTI file.
        missing = [path for entry in entries for path in (entry.img_path, entry.mask_path)
                   if path and not (os.path.isfile(path) or (entry.kind == "volume" and os.path.isdir(path)))]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserInputError(f"{missing[0]}: listed in the {name} manifest but not found{more}")
        for entry in entries:
            if entry.kind == "image" and entry.mask_path:
                _check_mask_size(entry.img_path, entry.mask_path, name)


def _check_mask_size(image: str, mask: str, dataset: str) -> None:
    """A 2-D mask must have its image's size: resizing one would score against ground truth nobody drew.

    Only the headers are read; a file that cannot be opened is reported when its pixels are read.
    """
    try:
        with Image.open(image) as image_file, Image.open(mask) as mask_file:
            image_size, mask_size = image_file.size, mask_file.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return
    if image_size != mask_size:
        raise UserInputError(f"{mask}: mask of {mask_size[0]} x {mask_size[1]} pixels for an image of {image_size[0]} "
                             f"x {image_size[1]} ({image}, {dataset} manifest); a mask must have its image's size")


def evaluate(predictor: AnomalyPredictor, manifests: list[Manifest], out_dir: Path, *, name: str | None = None,
             overwrite: bool = False, show_progress: bool = True,
             volume_options: CaseOptions = CaseOptions(), calibration: Calibration | None = None) -> EvaluationReport:
    """Evaluate `predictor` on the test split of every manifest and write the report files into `out_dir`.

    `name` labels this detector in the report (default: its method, and its prompt file if any).
    Manifests of volumes are sliced, windowed and scored as `infer` would with `volume_options`. With a
    `calibration` (checked against the model and options first), each dataset also gets the rates at its
    operating points.
    """
    out_dir = Path(out_dir)
    check_evaluation_inputs(manifests, out_dir, overwrite)
    started = time.perf_counter()
    published = published_anomalyclip()
    model = predictor.provenance()
    if calibration:
        calibration.check_applies(model, case_scoring(calibration.scoring["kind"], volume_options),
                                  calibration.path or "calibration")
    datasets: dict[str, DatasetResult] = {}
    inference_seconds = 0.0
    for dataset_name, manifest in zip(_dataset_names(manifests), manifests):
        kind = manifest.entries("test")[0].kind
        if calibration:
            calibration.check_kind(kind, manifest.root)
        samples = samples_by_class(manifest, kind)
        keep_pixels = any(sample.entry.has_mask for sample in samples)
        dataset_started = time.perf_counter()
        if kind == "volume":
            predictions = predict_volumes(predictor, samples, volume_options, keep_pixels, dataset_name,
                                          show_progress)
        else:
            predictions = predict(predictor, samples, keep_pixels, dataset_name, show_progress)
        inference_seconds += time.perf_counter() - dataset_started
        if kind == "volume":
            pixel_metrics = voxel_metrics(predictions)
            pixels = {cls_name: voxels.curve_sample() for cls_name, voxels in predictions.voxels.items()}
        else:
            pixel_metrics, pixels = image_pixel_metrics(samples, predictions), image_curve_pixels(samples, predictions)
        result = score_dataset(dataset_name, manifest, samples, predictions.scores, predictions.map_max,
                               pixel_metrics, published.datasets.get(manifest.dataset, {}), entries=f"{kind}s")
        if calibration:
            labels = [sample.entry.anomaly for sample in samples]
            result.operating_points = operating_point_metrics(labels, predictions.scores, calibration)
        result.files = write_curves(out_dir, result, samples, predictions.scores, pixels)
        if kind == "image":  # volumes: the case folders of `medclip-ad infer` are the way to look at them
            result.examples = write_examples(out_dir, predictor, result, samples, predictions.scores)
        result.seconds = time.perf_counter() - dataset_started
        datasets[dataset_name] = result
    images = sum(len(result.cases) for result in datasets.values())
    total_seconds = time.perf_counter() - started
    report = EvaluationReport(
        name=name or _default_name(model), model=model, datasets=datasets, out_dir=out_dir,
        timing={"images": images, "seconds": round(total_seconds, 3),
                "inference_seconds": round(inference_seconds, 3),
                "images_per_second": round(images / inference_seconds, 3),
                "end_to_end_images_per_second": round(images / total_seconds, 3)})
    write_report(out_dir, report, published.source)
    return report


def _default_name(model: dict[str, object]) -> str:
    """The method, and the prompt file where there is one, so two reports of one method stay apart."""
    prompts = model.get("prompts")
    return f"{model['method']} ({Path(str(prompts)).name})" if prompts else str(model["method"])


def _dataset_names(manifests: list[Manifest]) -> list[str]:
    """A file-name-safe, unique name per manifest: its dataset name, numbered when it repeats."""
    names: list[str] = []
    for manifest in manifests:
        base = re.sub(r"[^\w.+-]", "_", manifest.dataset or "dataset")
        candidate, number = base, 1
        while candidate in names:
            number += 1
            candidate = f"{base}_{number}"
        names.append(candidate)
    return names
