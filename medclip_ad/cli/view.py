"""`medclip-ad view`: start the Streamlit viewer shipped with the package, on this machine only by default.

    medclip-ad view medclip-ad-demo/results/dicom            # open an infer output folder
    medclip-ad view --data-root /data/studies --port 8600    # browse a server folder

It runs `python -m streamlit run <installed viewer script>` with the same interpreter, so the viewer
sees this installation's medclip_ad; the process is replaced by Streamlit's (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from medclip_ad.errors import UserInputError
from medclip_ad.resources import viewer_script

HELP = "start the viewer (Streamlit) on an infer output folder and/or a data root to browse"
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8501


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="?", type=Path, metavar="RESULTS",
                        help="an infer output folder (one case, or a folder of cases) opened at start")
    parser.add_argument("--data-root", type=Path, metavar="DIR",
                        help="the only server folder the viewer may browse and open studies from")
    parser.add_argument("--weights-dir", type=Path, metavar="DIR",
                        help="the folder whose CLIP weights and checkpoints the viewer offers (visitors cannot "
                             "name other files)")
    parser.add_argument("--address", default=DEFAULT_ADDRESS,
                        help="address to listen on (default: this machine only; 0.0.0.0 exposes the viewer "
                             "to the network, without authentication)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The command that starts the viewer: headless (no browser opened here), no usage statistics sent."""
    if args.results is not None and not args.results.is_dir():
        raise UserInputError(f"{args.results}: not a folder (give an infer output folder)")
    if args.data_root is not None and not args.data_root.is_dir():
        raise UserInputError(f"--data-root {args.data_root}: not a folder")
    if args.weights_dir is not None and not args.weights_dir.is_dir():
        raise UserInputError(f"--weights-dir {args.weights_dir}: not a folder")
    if not 0 < args.port < 65536:
        raise UserInputError(f"--port {args.port}: must be 1..65535")
    viewer_options = []
    if args.results is not None:
        viewer_options += ["--case", str(args.results.resolve())]
    if args.data_root is not None:
        viewer_options += ["--data-root", str(args.data_root.resolve())]
    if args.weights_dir is not None:
        viewer_options += ["--weights-dir", str(args.weights_dir.resolve())]
    return [sys.executable, "-m", "streamlit", "run", str(viewer_script()),
            "--server.address", args.address, "--server.port", str(args.port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--", *viewer_options]


def run(args: argparse.Namespace) -> int:
    command = streamlit_command(args)
    if importlib.util.find_spec("streamlit") is None:
        raise UserInputError("the viewer needs Streamlit: pip install 'medclip-ad[viewer]'")
    print(f"medclip-ad viewer on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    os.execv(command[0], command)
    return 0  # not reached: the process is now Streamlit's
