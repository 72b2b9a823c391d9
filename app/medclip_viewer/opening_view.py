"""What a worklist case shows when it opens, worked out while it is read ahead, so the viewer can prepare it.

The browser gets, with the open case, the next and previous cases' display files and opening settings (the
window, threshold, plane and crosshair the page would start them with). It loads them into spare views
once the open case is drawn, and N or P then shows the prepared case at once and tells the server, whose
rerun finds the viewer already showing what it sends. The worklist's order stays the server's: only the
neighbours it names are prepared. A neighbour still being read ahead is offered as the URL of a file
written when it is ready (a random name in the served folder), which the viewer polls: no script rerun is
needed to hand it over. 2-D images are not prepared; the viewer loads them as it loads any case.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from medclip_ad.errors import UserInputError
from medclip_ad.io.orientation import plane_layout, plane_of_axis

from medclip_viewer.case_cache import OpenedCase, case_key, load_map_shared, on_read_ahead
from medclip_viewer.cases import ResultFolder, item_key
from medclip_viewer.confinement import Scope
from medclip_viewer.display_controls import default_threshold, opening_mapping, opening_threshold
from medclip_viewer.niivue_viewer import (
    MAX_DISPLAY_FILES,
    VOLUMES_DIR,
    display_urls,
    map_files,
    peak_mm,
    scan_files,
    served_folder,
)

PENDING_SUFFIX = ".json"
# Opening views of the cases read ahead (None for a 2-D image), by case key (folder, scope and file
# versions), and the files promised to the browser for cases still being read ahead.
_lock = threading.Lock()
_views: OrderedDict[tuple, dict | None] = OrderedDict()
_promised: dict[tuple, Path] = {}


def viewer_case_id(key: str) -> str:
    """The opaque name the browser knows a case by (never its path)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def focus_id(key: str, plane: str, index: int) -> str:
    """Names one placing of the crosshair: the viewer moves it only when this changes."""
    return f"{key}|{plane}|{index}"


def opening_view(opened: OpenedCase) -> dict | None:
    """The viewer's arguments for a volume case as it opens (None for a 2-D image): the case's own part of
    what `reading_view` sends; colormap, opacity and layout stay the reader's."""
    scan, result = opened.scan, opened.result
    if scan.kind != "volume":
        return None
    key = item_key(ResultFolder(result.folder))
    anomaly_map = load_map_shared(result, scan)
    plane = result.document.get("slice_axis") or plane_of_axis(scan.slice_axis, scan.affine)
    layout = plane_layout(plane, scan.affine)
    top = result.document.get("top_slices") or []
    index = top[0] if top else scan.array.shape[layout.slice_axis] // 2
    low, high = opening_mapping(scan, result.document.get("intensity")).bounds or (0.0, 255.0)
    threshold = opening_threshold(result.map_max, default_threshold(result, scan))
    files = display_urls(scan_files(scan), map_files(result, anomaly_map, scan.affine, volume=True))
    return dict(case_id=viewer_case_id(key), **files, window=[float(low), float(high)], map_max=float(result.map_max),
                threshold=float(threshold), plane=plane,
                focus={"mm": peak_mm(anomaly_map, scan.affine, layout.slice_axis, index),
                       "nonce": focus_id(key, plane, index)},
                random_weights=bool(result.random_weights), image=False)


def _prepare(key: tuple, opened: OpenedCase) -> None:
    """Work out a case's opening view as it is read ahead, and write it where the browser was told to look."""
    with _lock:
        if key in _views:  # read ahead again on a later run: worked out already, and nothing promised since
            return
    view = opening_view(opened)
    with _lock:
        _views[key] = view
        while len(_views) > MAX_DISPLAY_FILES:
            _views.popitem(last=False)
        promised = _promised.pop(key, None)
    if promised is not None:  # null for a 2-D image: the viewer stops asking
        partial = promised.with_name(f".{promised.name}.partial")
        partial.write_text(json.dumps(view))
        partial.replace(promised)


on_read_ahead(_prepare)


def neighbour_offer(folder: Path, scope: Scope) -> dict | None:
    """What the viewer is told of a worklist neighbour: its opening view when it is read ahead, else
    `{"pending": url}` of the file its view will be written to (the neighbour is being read ahead: the page
    asked for it in an earlier run); None for a case that cannot be read now or is a 2-D image."""
    try:
        key = case_key(folder, scope)
    except (UserInputError, OSError, KeyError, ValueError):  # unreadable now: the page reports it when opened
        return None
    with _lock:
        if key in _views:
            return _views[key]
        promised = _promised.get(key)
        if promised is None:
            promised = _promised[key] = served_folder() / VOLUMES_DIR / f"{secrets.token_hex(16)}{PENDING_SUFFIX}"
    return {"pending": f"{VOLUMES_DIR}/{promised.name}"}
