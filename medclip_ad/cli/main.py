"""`medclip-ad` (also `python -m medclip_ad`): one entry point, one module per subcommand.

User errors end as one line on stderr and exit code 2; no traceback for them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from medclip_ad import __version__
from medclip_ad.cli import (
    bundle_path,
    calibrate,
    demo,
    download_weights,
    evaluate,
    export,
    import_checkpoint,
    infer,
    prepare_data,
    pull,
    train,
    view,
)
from medclip_ad.errors import USER_ERROR_EXIT, UserInputError

SUBCOMMANDS = {"infer": infer, "demo": demo, "import-checkpoint": import_checkpoint, "prepare-data": prepare_data,
               "train": train, "evaluate": evaluate, "export": export, "view": view, "bundle-path": bundle_path,
               "download-weights": download_weights, "calibrate": calibrate, "pull": pull}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medclip-ad", description="Zero-shot anomaly detection for medical "
                                     "images and volumes (AnomalyCLIP).")
    parser.add_argument("--version", action="version", version=f"medclip-ad {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        module.add_arguments(subparsers.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command].run(args)
    except UserInputError as error:
        print(f"medclip-ad: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("medclip-ad: interrupted; finished cases are kept, the unfinished one was discarded", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
