"""One browser session's viewer state: what is open, what has been computed for it, and the widget keys.

Streamlit reruns the script on every interaction, so anything expensive (a read volume, a loaded map,
percentile bounds, inference results) lives here between reruns. Results are kept per case and per
model settings, so switching cases or settings back and forth never recomputes. Uploads and the
viewer's own inference outputs go to a private temporary folder that disappears with the session;
folders left behind by a server that was killed are removed when the next one starts.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.scan import Scan

from medclip_viewer.case_cache import load_map_shared
from medclip_viewer.cases import CaseResult, Catalogue

if TYPE_CHECKING:
    from medclip_viewer.model import InferenceJob

# Widget keys: the app's controls, and what tests drive.
KEY_SOURCE = "open.source"
KEY_UPLOAD = "open.upload"
KEY_BROWSE = "open.browse"
KEY_BROWSE_OPEN = "open.browse_open"
KEY_CASE = "open.case"
KEY_VOLUME_INDEX = "open.volume_index"
KEY_CLIP_WEIGHTS = "model.clip_weights"
KEY_PROMPTS = "model.prompts"
KEY_METHOD = "model.method"
KEY_DEVICE = "model.device"
KEY_IMAGE_SIZE = "model.image_size"
KEY_LAYERS = "model.layers"
KEY_RUN = "model.run"
KEY_MODEL_SECTION = "model.section"
KEY_SCORED_PLANE = "model.scored_plane"
KEY_AGGREGATION = "model.aggregation"
KEY_TOP_K = "model.top_k"
KEY_PLANE = "view.plane"
# The open tab below the viewer: only its content is built.
KEY_SECTION = "view.section"
KEY_INTENSITY_MODE = "display.mode"
KEY_WINDOW_PRESET = "display.window_preset"
KEY_WINDOW_WIDTH = "display.window_width"
KEY_WINDOW_LEVEL = "display.window_level"
KEY_PERCENTILES = "display.percentiles"
# Not a widget: the last window (and the reader's own custom one), kept while the window controls are hidden.
KEY_WINDOW_MEMORY = "display.window_memory"
KEY_OPACITY = "overlay.opacity"
KEY_COLORMAP = "overlay.colormap"
KEY_THRESHOLD = "overlay.threshold"
KEY_SHOW_PATIENT = "privacy.show_patient"
KEY_DOWNLOAD_OVERLAY = "export.overlay"
KEY_DOWNLOAD_MAP = "export.map"
KEY_PASSWORD = "access.password"
SLICE_KEY_PREFIX = "view.slice."
JUMP_KEY_PREFIX = "view.jump."
SCORE_PLOT_KEY_PREFIX = "view.score_plot."

# Controls whose valid values depend on the case (slice ranges, windows, the map's scale): forgotten
# whenever another case opens, so they start from that case's defaults.
CASE_DEPENDENT_KEYS: tuple[str, ...] = (KEY_PLANE, KEY_INTENSITY_MODE, KEY_WINDOW_PRESET, KEY_WINDOW_WIDTH,
                                        KEY_WINDOW_LEVEL, KEY_WINDOW_MEMORY, KEY_PERCENTILES, KEY_THRESHOLD)

_SESSION_KEY = "viewer.session"
# Session folders are named after the server's process id, so a new server knows which are stale.
WORKDIR_PREFIX = "medclip-ad-viewer-"


def keep_hidden_widget_values(keys: tuple[str, ...]) -> None:
    """For controls in a section built only while open: Streamlit drops the value of a widget not drawn in
    a run, but keeps session state the app wrote itself, so writing the values back keeps them (Streamlit's
    documented way). Called before the widgets, every run."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def slice_key(plane: str) -> str:
    """Each plane keeps its own slice, as in a three-pane viewer."""
    return f"{SLICE_KEY_PREFIX}{plane}"


@dataclass
class ViewerSession:
    """The open case, its results and caches, and this session's private folder."""

    workdir: Path
    catalogues: dict[str, Catalogue] = field(default_factory=dict)
    case_key: str | None = None
    scan: Scan | None = None
    case_label: str = ""
    results: dict[str, CaseResult] = field(default_factory=dict)
    shown_result: dict[str, str] = field(default_factory=dict)
    mappings: dict[tuple, IntensityMapping] = field(default_factory=dict)
    jobs: dict[str, InferenceJob] = field(default_factory=dict)
    inference_errors: dict[str, str] = field(default_factory=dict)
    _map_key: str | None = None
    _map: np.ndarray | None = None

    def open_case(self, case_key: str, scan: Scan, label: str) -> None:
        """Make `scan` the open case (`label`: its neutral name); drop what belonged to the previous one
        (its volume, map, bounds)."""
        self.case_key, self.scan, self.case_label = case_key, scan, label
        self.mappings.clear()
        self._map_key, self._map = None, None
        for key in [*CASE_DEPENDENT_KEYS, *(k for k in st.session_state if str(k).startswith(SLICE_KEY_PREFIX))]:
            st.session_state.pop(key, None)

    def close_case(self) -> None:
        """Show no case (after one failed to open) rather than the previous case under the new choice."""
        self.case_key, self.scan = None, None
        self._map_key, self._map = None, None

    def add_result(self, case_key: str, result_key: str, result: CaseResult) -> None:
        """Remember a result and show it for its case."""
        self.results[result_key] = result
        self.shown_result[case_key] = result_key

    def shown(self) -> CaseResult | None:
        """The result shown for the open case, if it has one."""
        result_key = self.shown_result.get(self.case_key or "")
        return self.results.get(result_key) if result_key else None

    def shown_map(self) -> np.ndarray | None:
        """The shown result's map, read from disk once per result."""
        result_key = self.shown_result.get(self.case_key or "")
        if result_key is None or self.scan is None:
            return None
        if self._map_key != result_key:
            self._map, self._map_key = load_map_shared(self.results[result_key], self.scan), result_key
        return self._map


def viewer_session() -> ViewerSession:
    """This browser session's state, created on first use with a private folder removed with it."""
    if _SESSION_KEY not in st.session_state:
        _remove_folders_of_stopped_servers()
        st.session_state[_SESSION_KEY] = new_session()
    return st.session_state[_SESSION_KEY]


def new_session() -> ViewerSession:
    """A session with its own folder, deleted with everything in it (uploads, results) once the session is
    dropped, when Streamlit forgets a closed browser session, or when the server exits."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    session = ViewerSession(workdir)
    weakref.finalize(session, shutil.rmtree, workdir, True)
    return session


def session_folders(pid: int | None = None) -> list[Path]:
    """The private folders of the sessions of one server process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return sorted(Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}{pid}-*"))


@st.cache_resource(show_spinner=False)
def _remove_folders_of_stopped_servers() -> None:
    """Once per server: session folders whose server process is gone (killed, crashed) are deleted."""
    pattern = re.compile(rf"^{re.escape(WORKDIR_PREFIX)}(\d+)-")
    for folder in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        match = pattern.match(folder.name)
        if match and folder.is_dir() and not _process_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
