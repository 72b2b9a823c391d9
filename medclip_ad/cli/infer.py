"""`medclip-ad infer`: score images, DICOM series and NIfTI volumes; write one folder per case.

A run with some bad inputs processes the good ones, names every bad one on its own line, and exits 1;
a run where no case could be written exits 2. Existing case folders are checked before the model loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.config import AGGREGATIONS, DICOM_OUTPUTS, PARAMETRIC_MAP_ENCODINGS, PLANE_NORMALS, CaseOptions
from medclip_ad.errors import PARTIAL_FAILURE_EXIT, USER_ERROR_EXIT, UserInputError
from medclip_ad.io.intensity import CT_WINDOW_PRESETS

if TYPE_CHECKING:
    from medclip_ad.inference.calibration import Calibration
    from medclip_ad.inference.predictor import AnomalyPredictor
    from medclip_ad.io.discovery import CaseSource

HELP = "detect anomalies in images (PNG/JPEG/TIFF), DICOM series or files, and NIfTI volumes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="image, DICOM file, DICOM series folder, NIfTI file, or a folder of these")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (one sub-folder per case)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case folders")
    parser.add_argument("--dicom-out", choices=DICOM_OUTPUTS,
                        help="also write DICOM for PACS (DICOM inputs only): a Parametric Map of the anomaly map, "
                             "RGB Secondary Capture overlays of the top slices, or both; always a Structured Report "
                             "of the findings, and with --calibration a Segmentation of the lesion mask")
    parser.add_argument("--parametric-map-encoding", choices=PARAMETRIC_MAP_ENCODINGS, default="uint16",
                        help="16-bit integers with a real-world value mapping (PACS render them; default) or float32")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration.json from `medclip-ad calibrate`: flag cases, write lesion masks and "
                             "their components")
    parser.add_argument("--operating-point", metavar="FPR",
                        help="operating point of the calibration, e.g. 5%% (default: its middle one)")
    parser.add_argument("--dicomweb-url", metavar="URL",
                        help="send every DICOM output to this DICOMweb server (STOW-RS); needs --dicom-out")
    add_case_arguments(parser)
    add_detector_arguments(parser)


def add_case_arguments(parser: argparse.ArgumentParser, overlays: bool = True) -> None:
    """Options that shape how a scan is sliced, windowed and summarised (shared with the demo and evaluate);
    `overlays` adds the count of top-slice overlays, for commands that write case folders."""
    group = parser.add_argument_group("volumes")
    group.add_argument("--axis", choices=list(PLANE_NORMALS), help="slicing plane (default: the acquisition plane)")
    group.add_argument("--window", type=float, nargs=2, metavar=("WIDTH", "LEVEL"),
                       help="display window for CT values (default: by modality)")
    group.add_argument("--window-preset", choices=list(CT_WINDOW_PRESETS), help="named CT window")
    group.add_argument("--aggregation", choices=AGGREGATIONS, default="max", help="volume score from slice scores")
    group.add_argument("--top-k", type=int, default=5, help="k of topk_mean")
    if overlays:
        group.add_argument("--overlays", type=int, default=CaseOptions.overlay_count,
                           help="overlay PNGs written for the top slices")
    group.add_argument("--volume-index", type=int, help="volume of a 4-D NIfTI to use")


def case_options(args: argparse.Namespace, calibration: Calibration | None = None) -> CaseOptions:
    return CaseOptions(axis=args.axis, window=tuple(args.window) if args.window else args.window_preset,
                       aggregation=args.aggregation, top_k=args.top_k,
                       overlay_count=getattr(args, "overlays", CaseOptions.overlay_count),
                       overwrite=getattr(args, "overwrite", False),
                       volume_index=args.volume_index, dicom_out=getattr(args, "dicom_out", None),
                       parametric_map_encoding=getattr(args, "parametric_map_encoding", "uint16"),
                       calibration=calibration,
                       operating_point=getattr(args, "operating_point", None))


def run(args: argparse.Namespace) -> int:
    from medclip_ad.inference.calibration import Calibration, case_scoring
    from medclip_ad.inference.case_folder import check_case_folder_free
    from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor
    from medclip_ad.inference.worklist import write_results_table
    from medclip_ad.io.discovery import discover_cases

    if args.dicomweb_url and not args.dicom_out:
        raise UserInputError("--dicomweb-url: sends the DICOM outputs, so it needs --dicom-out")
    if args.operating_point and not args.calibration:
        raise UserInputError("--operating-point: needs --calibration")
    sender = None
    if args.dicomweb_url:
        from medclip_ad.io.dicomweb import DicomWebClient

        sender = DicomWebClient(args.dicomweb_url)
    calibration = Calibration.load(args.calibration) if args.calibration else None
    if calibration:
        calibration.operating_point(args.operating_point)  # an unknown one is refused now
    sources, problems = discover_cases(args.inputs, exclude=[args.out])
    failures = [f"{problem.path}: {problem.message}" for problem in problems]
    if not sources:
        raise UserInputError("; ".join(failures) if failures else "no readable input")
    for source in sources:
        check_case_folder_free(args.out, source.name, args.overwrite)
    predictor = AnomalyPredictor(detector_config(args))
    if predictor.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    options = case_options(args, calibration)
    if calibration:
        calibration.check_applies(predictor.provenance(), case_scoring(calibration.scoring["kind"], options),
                                  args.calibration)
    written = infer_sources(predictor, sources, args.out, options, failures)
    if written:
        print(f"worklist: {write_results_table(args.out, written)}")
    if sender:
        for folder, _ in written:
            try:
                sender.store_folder(folder)
            except UserInputError as error:
                failures.append(str(error))
    for failure in failures:
        print(f"medclip-ad: error: {failure}", file=sys.stderr)
    verdicts = ""
    if calibration:
        flagged = sum(1 for _, document in written if document.get("flagged"))
        verdicts = f", {flagged} flagged at FPR {calibration.operating_point(args.operating_point).name}"
    failed = f"; {len(failures)} input(s) failed" if failures else ""
    print(f"{len(written)} case(s) written to {args.out}{verdicts}{failed}")
    if not failures:
        return 0
    return PARTIAL_FAILURE_EXIT if written else USER_ERROR_EXIT


def infer_sources(predictor: AnomalyPredictor, sources: list[CaseSource], out_dir: Path, options: CaseOptions,
                  failures: list[str]) -> list[tuple[Path, dict]]:
    """Run each case; a case that fails adds its error line to `failures` and the rest go on.

    Returns each written case folder with its scores.json document."""
    from tqdm import tqdm

    from medclip_ad.inference.case import resolve_slice_axis, run_case
    from medclip_ad.io.readers import read_case

    written = []
    for source in tqdm(sources, desc="cases", unit="case", disable=len(sources) < 2):
        try:
            scan = read_case(source, volume_index=options.volume_index)
            total = scan.array.shape[resolve_slice_axis(scan, options)] if scan.kind == "volume" else 0
            with tqdm(total=total, desc=scan.name, unit="slice", leave=False, disable=not total) as bar:
                document = run_case(predictor, scan, out_dir, options, progress=bar.update)
            written.append((out_dir / scan.name, document))
        except UserInputError as error:
            failures.append(str(error))
    return written
