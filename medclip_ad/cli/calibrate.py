"""`medclip-ad calibrate`: fit operating points on studies the user declares normal.

The normals are scored exactly as `infer` scores them (same model and scoring options), so the
thresholds mean on new studies what they meant on the normals. Too few normals for a requested false-
positive rate are refused before the model loads; a normal that cannot be read is named and left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.cli.infer import add_case_arguments, case_options
from medclip_ad.config import CALIBRATION_CONFIDENCE, CALIBRATION_FPRS, PIXEL_PERCENTILE
from medclip_ad.errors import PARTIAL_FAILURE_EXIT, UserInputError

HELP = "fit operating points (case-score thresholds at chosen false-positive rates, a pixel threshold) on normals"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("normals", nargs="*", type=Path, metavar="NORMAL",
                        help="studies or images declared normal: files, DICOM series folders, or folders of these")
    parser.add_argument("--manifest", type=Path, nargs="+", default=[], metavar="M",
                        help="also the normal items (anomaly 0) of these manifests' test splits")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="calibration file to write (JSON)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing calibration file")
    parser.add_argument("--fpr", nargs="+", default=[f"{fpr * 100:g}%" for fpr in CALIBRATION_FPRS], metavar="RATE",
                        help="false-positive rates of the operating points, as 5%% or 0.05 (default: %(default)s)")
    parser.add_argument("--pixel-percentile", type=float, default=PIXEL_PERCENTILE, metavar="P",
                        help="percentile of the normals' map values that becomes the lesion-mask threshold")
    parser.add_argument("--confidence", type=float, default=CALIBRATION_CONFIDENCE,
                        help="confidence of the recorded bounds on each operating point's false-positive rate")
    add_detector_arguments(parser)
    add_case_arguments(parser, overlays=False)


def run(args: argparse.Namespace) -> int:
    from medclip_ad.inference.calibration import parse_fpr
    from medclip_ad.inference.calibration_fit import check_enough_normals, fit_calibration
    from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor
    from medclip_ad.io.writers import write_json

    fprs = [parse_fpr(text) for text in args.fpr]
    if args.out.exists() and not args.overwrite:
        raise UserInputError(f"{args.out}: already exists (pass --overwrite to replace it)")
    readers, failures = _normal_readers(args)
    check_enough_normals(len(readers), fprs)
    predictor = AnomalyPredictor(detector_config(args))
    if predictor.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    calibration = fit_calibration(predictor, readers, case_options(args), fprs, pixel_percentile=args.pixel_percentile,
                                  confidence=args.confidence, failures=failures)
    write_json(args.out, calibration.to_json())
    for failure in failures:
        print(f"medclip-ad: error: {failure}", file=sys.stderr)
    for point in calibration.operating_points:
        low, high = point.fpr_interval
        print(f"FPR {point.name}: score > {point.threshold:.6g} (expected FPR {point.expected_fpr:.2%}, "
              f"{calibration.confidence:.0%} interval {low:.2%}..{high:.2%}, upper bound {point.fpr_upper_bound:.2%})")
    print(f"pixel threshold ({calibration.pixel_percentile:g}th percentile of normal map values): "
          f"{calibration.pixel_threshold:.6g}")
    print(f"calibration of {calibration.count} normal(s) written to {args.out}")
    return PARTIAL_FAILURE_EXIT if failures else 0


def _normal_readers(args: argparse.Namespace) -> tuple[list, list[str]]:
    """One reader per normal (so a bad file fails alone, when it is read) and the problems found up front."""
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.io.discovery import discover_cases
    from medclip_ad.io.readers import read_case, read_study

    failures: list[str] = []
    readers = []
    if args.normals:
        sources, problems = discover_cases(args.normals, exclude=[args.out])
        failures += [f"{problem.path}: {problem.message}" for problem in problems]
        readers += [lambda source=source: read_case(source, volume_index=args.volume_index) for source in sources]
    for path in args.manifest:
        manifest = Manifest.load(path)
        for entry in manifest.entries("test"):
            if not entry.anomaly:
                location = Path(manifest.absolute(entry).img_path)
                readers.append(lambda location=location: read_study(location, args.volume_index))
    if not readers:
        raise UserInputError("; ".join(failures) if failures else "no normals given (NORMAL paths or --manifest)")
    return readers, failures
