"""`medclip-ad` (also `python -m medclip_ad`): one entry point, one module per subcommand.

Every subcommand also takes `--config FILE` (its options from YAML/JSON), `--log-level` and
`--log-format`. User errors end as one line on stderr and exit code 2; no traceback for them.
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
from medclip_ad.cli.config_file import add_config_argument, apply_config_file, config_file_argument
from medclip_ad.cli.log_options import add_log_arguments, configure_logging
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
        subparser = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(subparser)
        common = subparser.add_argument_group("common")
        add_config_argument(common)
        add_log_arguments(common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = _parse(parser, argv)
        configure_logging(args.log_level, args.log_format)
        return SUBCOMMANDS[args.command].run(args)
    except UserInputError as error:
        print(f"medclip-ad: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("medclip-ad: interrupted; finished cases are kept, the unfinished one was discarded", file=sys.stderr)
        return 130


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """With `--config FILE` after a subcommand, the file's values become that subcommand's defaults first.

    The file is found by reading argv directly: argparse would refuse the missing required options first.
    """
    command = next((token for token in argv if token in SUBCOMMANDS), None)
    config = config_file_argument(argv[argv.index(command) + 1:]) if command else None
    if config is not None:
        subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        apply_config_file(subparsers.choices[command], config)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
