"""`medclip-ad` (also `python -m medclip_ad`): one entry point, one module per subcommand.

Every subcommand also takes `--config FILE` (its options from YAML/JSON), `--log-level` and
`--log-format`. User errors end as one line on stderr and exit code 2; no traceback for them. An error
nobody anticipated also ends as one line, with its traceback written to a log file the line names.
SIGTERM is handled like Ctrl-C: unfinished outputs are removed on the way out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
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
from medclip_ad.errors import (
    INTERRUPTED_EXIT,
    TERMINATED_EXIT,
    USER_ERROR_EXIT,
    Terminated,
    UserInputError,
    one_line,
    sigterm_as_interrupt,
)

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
    args = None
    try:
        args = _parse(parser, argv)
        configure_logging(args.log_level, args.log_format)
        with sigterm_as_interrupt():
            return SUBCOMMANDS[args.command].run(args)
    except UserInputError as error:
        print(f"medclip-ad: error: {one_line(error)}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt as interrupt:
        how = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"medclip-ad: {how}; finished cases are kept, the unfinished one was discarded", file=sys.stderr)
        return TERMINATED_EXIT if isinstance(interrupt, Terminated) else INTERRUPTED_EXIT
    except Exception as error:  # a bug or a library failure outside any one case: one line, traceback logged
        from medclip_ad.inference.case_failures import CaseFailures

        out = getattr(args, "out", None)
        log_folder = out if isinstance(out, Path) and out.is_dir() else Path(tempfile.gettempdir())
        line = CaseFailures(log_folder).record(f"medclip-ad {args.command if args else ''}".rstrip(), error)
        print(f"medclip-ad: error: {line}", file=sys.stderr)
        return USER_ERROR_EXIT


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
