"""What the person starting the viewer chose: what it may open, which models it offers, and who may use it.

    streamlit run app/viewer.py -- --case results/dicom --data-root /data/studies --weights-dir /models

Everything the viewer reads lies in folders named here: `--data-root` (browsing, and the scans that
results name), the `--case` folder, `--weights-dir` (the CLIP weights and checkpoints offered in the
sidebar) and each session's own upload folder; nothing a page visitor types names a server path.

The same choices can come from the environment (MEDCLIP_AD_CASE, MEDCLIP_AD_DATA_ROOT,
MEDCLIP_AD_WEIGHTS_DIR, MEDCLIP_AD_MAX_UPLOAD_MB, MEDCLIP_AD_MAX_TOTAL_UPLOAD_MB), which is how
containers and tests configure it; command-line arguments win. The password comes from Streamlit
secrets (`viewer_password` in .streamlit/secrets.toml) or MEDCLIP_AD_VIEWER_PASSWORD, never the
command line, where every local user could read it. Arguments the viewer does not know are ignored,
because Streamlit's test harness runs the script with the test runner's own arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from medclip_ad.limits import DEFAULT_MAX_SESSION_UPLOAD_BYTES, DEFAULT_MAX_TOTAL_UPLOAD_BYTES, MIB

CASE_ENV = "MEDCLIP_AD_CASE"
DATA_ROOT_ENV = "MEDCLIP_AD_DATA_ROOT"
WEIGHTS_DIR_ENV = "MEDCLIP_AD_WEIGHTS_DIR"
MAX_UPLOAD_ENV = "MEDCLIP_AD_MAX_UPLOAD_MB"
MAX_TOTAL_UPLOAD_ENV = "MEDCLIP_AD_MAX_TOTAL_UPLOAD_MB"
PASSWORD_ENV = "MEDCLIP_AD_VIEWER_PASSWORD"
PASSWORD_SECRET = "viewer_password"


@dataclass(frozen=True)
class LaunchOptions:
    """`case`: an `infer` output folder (one case, or a folder of cases) opened at start.
    `data_root`: the server folder the browser may list and open, and where the scans results name must
    lie; None disables browsing. `weights_dir`: the folder whose weights and checkpoints the sidebar
    offers; None offers only the built-in choices. Upload caps are bytes per session and for all
    sessions together."""

    case: Path | None = None
    data_root: Path | None = None
    weights_dir: Path | None = None
    max_session_upload_bytes: int = DEFAULT_MAX_SESSION_UPLOAD_BYTES
    max_total_upload_bytes: int = DEFAULT_MAX_TOTAL_UPLOAD_BYTES


def parse_launch_options(argv: Sequence[str], environ: Mapping[str, str]) -> LaunchOptions:
    """Read the options from the script's arguments, else from the environment."""
    parser = argparse.ArgumentParser(prog="app/viewer.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--case", type=Path)
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--weights-dir", type=Path)
    parser.add_argument("--max-upload-mb", type=float)
    parser.add_argument("--max-total-upload-mb", type=float)
    known, _ = parser.parse_known_args(list(argv))
    folders = {name: value or _env_path(environ, env) for name, value, env in (
        ("case", known.case, CASE_ENV), ("data_root", known.data_root, DATA_ROOT_ENV),
        ("weights_dir", known.weights_dir, WEIGHTS_DIR_ENV))}
    return LaunchOptions(
        **{name: path.expanduser().resolve() if path else None for name, path in folders.items()},
        max_session_upload_bytes=_megabytes(known.max_upload_mb, environ, MAX_UPLOAD_ENV,
                                            DEFAULT_MAX_SESSION_UPLOAD_BYTES),
        max_total_upload_bytes=_megabytes(known.max_total_upload_mb, environ, MAX_TOTAL_UPLOAD_ENV,
                                          DEFAULT_MAX_TOTAL_UPLOAD_BYTES))


def viewer_password(secrets: Mapping[str, object], environ: Mapping[str, str]) -> str | None:
    """The password visitors must give, if one is configured (secrets first, then the environment)."""
    value = secrets.get(PASSWORD_SECRET) if secrets else None
    value = value if isinstance(value, str) and value else environ.get(PASSWORD_ENV, "")
    return value or None


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "").strip()
    return Path(value) if value else None


def _megabytes(argument: float | None, environ: Mapping[str, str], name: str, default: int) -> int:
    """A cap given in MB (argument, else environment), as bytes; a cap that is not a positive number is ignored."""
    text = environ.get(name, "").strip()
    try:
        value = argument if argument is not None else float(text) if text else None
    except ValueError:
        value = None
    return int(value * MIB) if value is not None and value > 0 else default
