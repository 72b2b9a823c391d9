"""The reading view of a volume: the NiiVue display of the open case with the sidebar's grey levels and
overlay settings, the crosshair on the map's peak in the slice chosen (the top slice when a case opens,
a jump button's slice after one), and the viewer's keys wired to the worklist and the review form.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.orientation import PlaneLayout, plane_layout

from medclip_viewer.niivue_viewer import (
    IMAGE_AFFINE,
    LAYOUTS,
    ViewerAction,
    image_volume,
    map_url,
    niivue_view,
    peak_mm,
    scan_url,
)
from medclip_viewer.review_capture import Bookmark
from medclip_viewer.state import ViewerSession
from medclip_viewer.verdict_panel import add_bookmark
from medclip_viewer.worklist_panel import step_worklist

KEY_LAYOUT = "view.layout"
# The tallest the viewer gets; it fits itself to the window below it (the whole image on a 1280x800 screen).
VIEWER_HEIGHT_PX = 900


def reading_view(session: ViewerSession, layout: PlaneLayout, index: int, mapping: IntensityMapping,
                 style: OverlayStyle | None) -> None:
    """The interactive display of the open volume or 2-D image (and its map, when it has one). An image is
    one axial slice of `image_volume` (colour kept), so it has no layouts and no slices to step through."""
    scan, result = session.scan, session.shown()
    anomaly_map = session.shown_map() if result is not None else None
    image = scan.kind == "image"
    if image:
        anomaly_map = image_volume(anomaly_map) if anomaly_map is not None else None
        affine, layout, index = IMAGE_AFFINE, plane_layout("axial", IMAGE_AFFINE), 0
    else:
        affine = scan.affine
    map_file = map_url(result, anomaly_map, affine) if anomaly_map is not None else None
    focus = peak_mm(anomaly_map, affine, layout.slice_axis, index) if anomaly_map is not None else None
    shown_layout = "axial" if image else st.segmented_control("Layout", LAYOUTS, key=KEY_LAYOUT, default=LAYOUTS[0],
                                                              label_visibility="collapsed") or LAYOUTS[0]
    case_id = hashlib.sha256((session.case_key or "").encode("utf-8")).hexdigest()[:16]
    niivue_view(case_id=case_id, scan_file=scan_url(scan), map_file=map_file, mapping=mapping, style=style,
                map_max=result.map_max if result is not None else 1.0, layout=shown_layout, plane=layout.plane,
                focus_mm=focus, focus_id=f"{session.case_key}|{layout.plane}|{index}", height=VIEWER_HEIGHT_PX,
                random_weights=bool(result is not None and result.random_weights),
                on_action=lambda action: _act(session, action), image=image)


def _act(session: ViewerSession, action: ViewerAction) -> None:
    if action.action in ("next", "previous"):
        step_worklist(1 if action.action == "next" else -1)
        return
    result, scan = session.shown(), session.scan
    if action.mm is None or result is None or scan is None or scan.kind != "volume" or action.plane not in LAYOUTS[1:]:
        return
    voxel = np.linalg.inv(np.asarray(scan.affine, dtype=np.float64)) @ np.array([*action.mm, 1.0])
    axis = plane_layout(action.plane, scan.affine).slice_axis
    index = int(np.clip(np.round(voxel[axis]), 0, scan.array.shape[axis] - 1))
    add_bookmark(result, Bookmark(action.plane, index).label())
