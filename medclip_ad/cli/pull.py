"""`medclip-ad pull`: fetch a study from a DICOMweb server (WADO-RS) into a folder `infer` can score."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fetch a study from a DICOMweb server (WADO-RS) to score it with `medclip-ad infer`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dicomweb-url", required=True, metavar="URL", help="DICOMweb service root")
    parser.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID to fetch")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder to write into (as DIR/<study>/<series>/<instance>.dcm)")


def run(args: argparse.Namespace) -> int:
    from medclip_ad.io.dicomweb import DicomWebClient

    files = DicomWebClient(args.dicomweb_url).pull_study(args.study, args.out)
    series = {path.parent for path in files}
    print(f"{len(files)} instance(s) in {len(series)} series written to {args.out / args.study}")
    return 0
