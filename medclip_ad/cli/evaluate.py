"""`medclip-ad evaluate`: a detector on dataset manifests, metrics per class, published numbers beside ours.

Bad inputs (a missing manifest, a missing image, an existing report) are refused before the model loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.cli.infer import add_case_arguments, case_options
from medclip_ad.errors import UserInputError
from medclip_ad.output_files import COMPARISON_MARKDOWN, REPORT_FILE, RESULTS_FILE

if TYPE_CHECKING:
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.evaluation import EvaluationReport

HELP = ("evaluate a detector on dataset manifests of images or volumes (image and pixel metrics, published "
        "AnomalyCLIP numbers beside)")
# Columns of the summary printed to stdout: the metrics the published table reports.
SUMMARY_METRICS: dict[str, str] = {"image_auroc": "img AUROC", "image_ap": "img AP", "pixel_auroc": "px AUROC",
                                   "aupro": "AUPRO"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, nargs="+", required=True, metavar="M",
                        help="manifests from `medclip-ad prepare-data` (one dataset each; their test splits are used)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help=f"report folder: {RESULTS_FILE}, {REPORT_FILE}, cases.csv, curves/, examples/")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    parser.add_argument("--name", help="label of this detector in the report (default: method and prompt file)")
    parser.add_argument("--compare", nargs="+", metavar="METHOD[:CKPT]",
                        help="evaluate several detectors instead of one (e.g. ensemble anomalyclip:prompts.safetensors "
                             "rwda:rwda_head.safetensors), each into a sub-folder of --out, and write "
                             f"{COMPARISON_MARKDOWN}; replaces --method and --prompts")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration.json from `medclip-ad calibrate`: also sensitivity, specificity, PPV and NPV "
                             "at its operating points, with Wilson intervals")
    add_detector_arguments(parser)
    add_case_arguments(parser, overlays=False)


def run(args: argparse.Namespace) -> int:
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.evaluation import check_evaluation_inputs, evaluate
    from medclip_ad.inference.calibration import Calibration
    from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor

    options = case_options(args)  # options are range-checked before anything is read
    config = None if args.compare else detector_config(args)
    manifests = [Manifest.load(path) for path in args.manifest]
    check_evaluation_inputs(manifests, args.out, args.overwrite)
    calibration = Calibration.load(args.calibration) if args.calibration else None
    if args.compare and calibration:
        raise UserInputError("--calibration: fits one detector, so it is not used with --compare")
    if args.compare:
        return _run_comparison(args, manifests)
    predictor = AnomalyPredictor(config)
    if predictor.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    report = evaluate(predictor, manifests, args.out, name=args.name, overwrite=args.overwrite,
                      volume_options=options, calibration=calibration)
    print(summary_table(report))
    print(f"report: {args.out / REPORT_FILE} ({report.timing['images_per_second']:.2f} images/s)")
    return 0


def _run_comparison(args: argparse.Namespace, manifests: list[Manifest]) -> int:
    from medclip_ad.evaluation.comparison import ComparedDetector, compare_detectors
    from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING

    if args.prompts or args.name:
        raise UserInputError(f"{'--prompts' if args.prompts else '--name'}: not used with --compare, which names "
                             f"each detector as METHOD[:CHECKPOINT]")
    detectors = [ComparedDetector.parse(spec) for spec in args.compare]
    comparison = compare_detectors(detectors, detector_config(args), manifests, args.out, overwrite=args.overwrite,
                                   volume_options=case_options(args))
    if comparison.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    print(comparison.markdown_path.read_text(encoding="utf-8"))
    print(f"comparison: {comparison.markdown_path}")
    return 0


def summary_table(report: EvaluationReport) -> str:
    """Mean metrics per dataset in percent, one line each, for a quick look in the terminal."""
    from medclip_ad.evaluation import format_percent

    width = max(len("dataset"), *(len(name) for name in report.datasets))
    header = f"{'dataset':<{width}}  {'images':>6}" + "".join(f"  {label:>9}" for label in SUMMARY_METRICS.values())
    lines = [header]
    for name, result in report.datasets.items():
        values = "".join(f"  {format_percent(result.mean[metric]):>9}" for metric in SUMMARY_METRICS)
        lines.append(f"{name:<{width}}  {result.counts()['images']:>6}{values}")
    return "\n".join(lines)
