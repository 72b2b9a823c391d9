"""The reading view of a volume: the NiiVue display of the open case with the sidebar's grey levels and
overlay settings, the crosshair on the map's peak in the slice chosen (the top slice when a case opens,
a jump button's slice after one), and the viewer's keys wired to the worklist and the review form.

A bookmark (B) lands on the case it was made on, which the viewer names: the open case's goes to its form
at once; one made on the case the viewer had just moved to (N, then B before the page followed) waits
until the page opens that case, since its slice is worked out from that case's own geometry.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.orientation import PlaneLayout, plane_layout

from medclip_viewer.niivue_viewer import (
    IMAGE_AFFINE,
    LAYOUTS,
    image_volume,
    map_files,
    niivue_view,
    peak_mm,
    scan_files,
)
from medclip_viewer.cases import ResultFolder, item_key
from medclip_viewer.opening_view import focus_id, neighbour_offer, viewer_case_id
from medclip_viewer.review_capture import Bookmark
from medclip_viewer.state import ViewerSession
from medclip_viewer.verdict_panel import add_bookmark
from medclip_viewer.viewer_actions import MOVES, ViewerAction
from medclip_viewer.worklist_panel import open_worklist_case, step_worklist, worklist_folders, worklist_neighbours

KEY_LAYOUT = "view.layout"
# Not a widget: bookmarks made in the viewer on a case the page has not opened yet.
KEY_PENDING_BOOKMARKS = "view.pending_bookmarks"
# The most such bookmarks kept (the viewer sends at most its last 16 actions).
MAX_PENDING_BOOKMARKS = 16
# The tallest the viewer gets; it fits itself to the window below it (the whole image on a 1280x800 screen).
VIEWER_HEIGHT_PX = 900


def reading_view(session: ViewerSession, layout: PlaneLayout, index: int, mapping: IntensityMapping,
                 style: OverlayStyle | None) -> None:
    """The interactive display of the open volume or 2-D image (and its map, when it has one). An image is
    one axial slice of `image_volume` (colour kept), so it has no layouts and no slices to step through."""
    place_bookmarks(session)
    scan, result = session.scan, session.shown()
    anomaly_map = session.shown_map() if result is not None else None
    image = scan.kind == "image"
    if image:
        anomaly_map = image_volume(anomaly_map) if anomaly_map is not None else None
        affine, layout, index = IMAGE_AFFINE, plane_layout("axial", IMAGE_AFFINE), 0
    else:
        affine = scan.affine
    map_file = map_files(result, anomaly_map, affine, volume=not image) if anomaly_map is not None else None
    focus = peak_mm(anomaly_map, affine, layout.slice_axis, index) if anomaly_map is not None else None
    shown_layout = "axial" if image else st.segmented_control("Layout", LAYOUTS, key=KEY_LAYOUT, default=LAYOUTS[0],
                                                              label_visibility="collapsed") or LAYOUTS[0]
    niivue_view(case_id=viewer_case_id(session.case_key or ""), scan=scan_files(scan), anomaly_map=map_file,
                mapping=mapping, style=style, map_max=result.map_max if result is not None else 1.0,
                layout=shown_layout, plane=layout.plane, focus_mm=focus,
                focus_id=focus_id(session.case_key or "", layout.plane, index), height=VIEWER_HEIGHT_PX,
                random_weights=bool(result is not None and result.random_weights),
                on_action=lambda action: _act(session, action), image=image, neighbours=_neighbour_views())


def _neighbour_views() -> dict[str, dict | None]:
    """The next and previous worklist cases' opening views (or where they will be: `neighbour_offer`)."""
    views: dict[str, dict | None] = {}
    for name, step in (("next", 1), ("previous", -1)):
        found = worklist_neighbours((step,))
        views[name] = neighbour_offer(found[0][1], found[0][2]) if found else None
    return views


def _act(session: ViewerSession, action: ViewerAction) -> None:
    if action.action in MOVES:
        # the viewer names the case it shows now when it had it prepared: the page follows it
        shown = [folder for folder in worklist_folders()
                 if viewer_case_id(item_key(ResultFolder(folder))) == action.case_id]
        if not (shown and open_worklist_case(shown[0])):
            step_worklist(1 if action.action == "next" else -1)
        return
    pending = [*st.session_state.get(KEY_PENDING_BOOKMARKS, []), action]
    st.session_state[KEY_PENDING_BOOKMARKS] = pending[-MAX_PENDING_BOOKMARKS:]
    place_bookmarks(session)


def place_bookmarks(session: ViewerSession) -> None:
    """Add the viewer's bookmarks made on the open case to its form (a bookmark naming no case is the open
    case's); those of other cases wait."""
    pending: list[ViewerAction] = st.session_state.get(KEY_PENDING_BOOKMARKS, [])
    if not pending or session.case_key is None:
        return
    open_id = viewer_case_id(session.case_key)
    here = [action for action in pending if action.case_id in (None, open_id)]
    st.session_state[KEY_PENDING_BOOKMARKS] = [action for action in pending if action not in here]
    for action in here:
        _bookmark(session, action)


def _bookmark(session: ViewerSession, action: ViewerAction) -> None:
    result, scan = session.shown(), session.scan
    if action.mm is None or result is None or scan is None or scan.kind != "volume" or action.plane not in LAYOUTS[1:]:
        return
    voxel = np.linalg.inv(np.asarray(scan.affine, dtype=np.float64)) @ np.array([*action.mm, 1.0])
    axis = plane_layout(action.plane, scan.affine).slice_axis
    index = int(np.clip(np.round(voxel[axis]), 0, scan.array.shape[axis] - 1))
    add_bookmark(result, Bookmark(action.plane, index).label())
