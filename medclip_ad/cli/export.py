"""`medclip-ad export`: a loaded detector as TorchScript and/or ONNX, each checked against eager PyTorch."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.config import EXPORT_FORMATS
from medclip_ad.errors import UserInputError
from medclip_ad.output_files import EXPORT_FILE_NAMES, EXPORT_MANIFEST_FILE

HELP = "export a detector (text side baked in) to TorchScript and ONNX, checked against the eager outputs"
# Exit code when an export does not reproduce the eager outputs.
MISMATCH_EXIT = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help=f"folder for {', '.join(EXPORT_FILE_NAMES.values())} and {EXPORT_MANIFEST_FILE}")
    parser.add_argument("--format", choices=EXPORT_FORMATS, nargs="+", dest="formats",
                        help="default: every format this installation can export (onnx needs onnx and onnxruntime)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exported files")
    add_detector_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from medclip_ad.inference.export import (
        ExportMismatchError,
        available_formats,
        check_export_request,
        export_detector,
    )
    from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor

    if args.compile != "off":
        raise UserInputError(f"--compile {args.compile}: exports are traced from the eager model; leave it off")
    formats = args.formats or list(available_formats())
    check_export_request(args.out, formats, args.overwrite)
    # Exports are fp32: `auto` means fp32 here; an explicit reduced precision is refused by the export.
    precision = "fp32" if args.precision == "auto" else args.precision
    predictor = AnomalyPredictor(dataclasses.replace(detector_config(args), precision=precision))
    if predictor.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
    try:
        checks = export_detector(predictor, args.out, formats, overwrite=args.overwrite)
    except ExportMismatchError as error:
        print(f"medclip-ad: export check failed: {error}", file=sys.stderr)
        return MISMATCH_EXIT
    for check in checks:
        print(check.describe())
    print(f"inputs, outputs and provenance: {args.out / EXPORT_MANIFEST_FILE}")
    return 0
