"""What the person starting the viewer chose: a results folder to open, and a data root to browse.

    streamlit run app/viewer.py -- --case medclip-ad-demo/results/dicom --data-root /data/studies

The same choices can come from the environment (MEDCLIP_AD_CASE, MEDCLIP_AD_DATA_ROOT), which is how
containers and tests configure it; command-line arguments win. Arguments the viewer does not know are
ignored, because Streamlit's test harness runs the script with the test runner's own arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CASE_ENV = "MEDCLIP_AD_CASE"
DATA_ROOT_ENV = "MEDCLIP_AD_DATA_ROOT"


@dataclass(frozen=True)
class LaunchOptions:
    """`case`: an `infer` output folder (one case, or a folder of cases) opened at start.
    `data_root`: the only server folder the browser may list and open; None disables browsing."""

    case: Path | None = None
    data_root: Path | None = None


def parse_launch_options(argv: Sequence[str], environ: Mapping[str, str]) -> LaunchOptions:
    """Read `--case` and `--data-root` from the script's arguments, else from the environment."""
    parser = argparse.ArgumentParser(prog="app/viewer.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--case", type=Path)
    parser.add_argument("--data-root", type=Path)
    known, _ = parser.parse_known_args(list(argv))
    case = known.case or _env_path(environ, CASE_ENV)
    data_root = known.data_root or _env_path(environ, DATA_ROOT_ENV)
    return LaunchOptions(case=case.expanduser().resolve() if case else None,
                         data_root=data_root.expanduser().resolve() if data_root else None)


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "").strip()
    return Path(value) if value else None
