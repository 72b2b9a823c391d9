"""Opened cases shared by every session of the server: a reader's second browser tab, or a colleague
opening the same worklist, gets the scan and map already read.

Entries are keyed by the case folder and the modification times of its scores.json, its map and the
scanned input, so a rerun of `medclip-ad infer` into the same folder is read afresh. The arrays are
shared read-only between sessions; nothing in the viewer writes into them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st
from medclip_ad.io.scan import Scan

from medclip_viewer.cases import SCORES_FILE, CaseResult, load_map, load_result, open_result
from medclip_viewer.confinement import Scope

# A 256x256x120 scan with its map is about 60 MB in memory.
MAX_CACHED_CASES = 8


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def open_result_shared(folder: Path, scope: Scope) -> tuple[Scan, CaseResult]:
    """`open_result`, read once per folder, scope and version for the whole server."""
    result = load_result(folder, scope)
    scanned = Path(result.document["input"])
    key = (_mtime(folder / SCORES_FILE), _mtime(result.map_path),
           _mtime(scanned if scanned.is_absolute() else folder / scanned))
    return _open(str(folder.resolve()), scope, key)


@st.cache_resource(max_entries=MAX_CACHED_CASES, show_spinner=False)
def _open(folder: str, scope: Scope, versions: tuple[int, int, int]) -> tuple[Scan, CaseResult]:
    return open_result(Path(folder), scope)


def load_map_shared(result: CaseResult, scan: Scan) -> np.ndarray:
    """`load_map`, read once per map file and version for the whole server."""
    return _map(str(result.map_path.resolve()), _mtime(result.map_path), result, scan)


@st.cache_resource(max_entries=MAX_CACHED_CASES, show_spinner=False)
def _map(path: str, version: int, _result: CaseResult, _scan: Scan) -> np.ndarray:
    return load_map(_result, _scan)
