"""The main area: the open case, its score and provenance, the scan beside its heatmap overlay in the
chosen plane and slice, the per-slice score curve with jumps to the top slices, and the exports.

Patient identifiers (kept by the readers under `metadata["patient"]` only) appear only while the
sidebar toggle is on; while it is off, the case is called by a neutral label (`case 1`) in the title
and the export file names, since file names from PACS exports often hold names or record numbers.
Every value read from a file is shown as text (display_text.py), never as markdown.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import streamlit as st
from medclip_ad.errors import UserInputError
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.random_weights import RANDOM_WEIGHTS_WARNING
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.orientation import (
    SCREEN_AXES,
    PlaneLayout,
    extract_slice,
    plane_layout,
    plane_of_axis,
    screen_labels,
)
from medclip_ad.io.scan import Scan

from medclip_viewer.cases import CaseResult
from medclip_viewer.display_text import plain
from medclip_viewer.rendering import (
    NO_PHYSICAL_SPACING,
    PanelMarks,
    annotate,
    compose_panels,
    display_shape,
    has_physical_spacing,
    image_layout,
    png_bytes,
    slice_position_mm,
)
from medclip_viewer.score_plot import SELECTION, selected_slice, slice_score_spec
from medclip_viewer.state import (
    JUMP_KEY_PREFIX,
    SCORE_PLOT_KEY_PREFIX,
    KEY_DOWNLOAD_MAP,
    KEY_DOWNLOAD_OVERLAY,
    KEY_PLANE,
    ViewerSession,
    slice_key,
)

PROVENANCE_FIELDS: tuple[str, ...] = ("method", "backbone", "clip_weights", "prompts", "prompts_sha256", "layers",
                                      "image_size", "precision", "random_weights", "package_version")
MAP_MIME = {".nii.gz": "application/gzip", ".npy": "application/octet-stream"}


def case_header(scan: Scan, title: str, show_patient: bool) -> None:
    """Title, geometry and modality; patient identifiers only when switched on."""
    st.subheader(plain(title))
    shape = " x ".join(str(n) for n in scan.array.shape)
    spacing = (f"spacing {' x '.join(f'{mm:.2f}' for mm in scan.spacing)} mm" if has_physical_spacing(scan)
               else NO_PHYSICAL_SPACING)
    hidden = "" if show_patient else " · patient identifiers hidden"
    st.text(f"{scan.kind} · {scan.modality or 'modality not recorded'} · {shape} voxels · {spacing}{hidden}")
    if not show_patient:
        return
    patient = scan.metadata.get("patient") or {}
    if patient:
        st.dataframe({"field": list(patient), "value": [str(value or "-") for value in patient.values()]},
                     hide_index=True)
    else:
        st.text("This file holds no patient identifiers.")


def random_weights_banner(result: CaseResult) -> None:
    """The red banner every result made with random CLIP weights carries (the package's own words)."""
    if result.random_weights:
        st.error(RANDOM_WEIGHTS_WARNING)


def score_metrics(result: CaseResult, layout: PlaneLayout, index: int) -> None:
    """The case score, and the score of the slice on screen when it lies in the scored plane."""
    document = result.document
    st.metric("Case score", f"{document['score']:.4f}",
              help=plain(f"aggregation: {document.get('score_aggregation', 'image score')}"))
    if document["kind"] == "volume" and layout.plane == document["slice_axis"]:
        st.metric(f"Slice {index} score", f"{document['slice_scores'][index]:.4f}")


def provenance(result: CaseResult) -> None:
    """Which model, weights, prompts and settings made the result: enough to question or reproduce it."""
    document = result.document
    model = document["model"]
    rows = {name: model.get(name) for name in PROVENANCE_FIELDS}
    rows.update({"intensity given to the model": document.get("intensity"), "map range": document["map_range"],
                 "scored plane": document.get("slice_axis"), "volume score": document.get("score_aggregation")})
    st.dataframe({"setting": list(rows), "value": [str(value) for value in rows.values()]}, hide_index=True)


def plane_control(scan: Scan, result: CaseResult | None) -> str | None:
    """The plane on screen, starting with the scored one (None for 2-D images, which have no planes)."""
    if scan.kind == "image":
        return None
    scored_plane = result.document["slice_axis"] if result else None
    st.session_state.setdefault(KEY_PLANE, scored_plane or plane_of_axis(scan.slice_axis, scan.affine))
    return st.radio("View", list(SCREEN_AXES), key=KEY_PLANE, horizontal=True)


def slice_position(scan: Scan, result: CaseResult | None, plane: str | None) -> tuple[PlaneLayout, int]:
    """The slice on screen, whether or not its slider is drawn: the viewer needs it before the slider's tab
    is built. Each plane remembers its own, and the scored plane starts at its top slice."""
    if plane is None:
        return image_layout(scan.spacing), 0
    layout = plane_layout(plane, scan.affine)
    count = scan.array.shape[layout.slice_axis]
    if count == 1:
        return layout, 0
    key = slice_key(plane)
    if not 0 <= st.session_state.get(key, 0) < count:
        st.session_state.pop(key)
    top = result.document["top_slices"] if result and plane == result.document["slice_axis"] else []
    st.session_state.setdefault(key, top[0] if top else count // 2)
    return layout, int(st.session_state[key])


def slice_slider(scan: Scan, layout: PlaneLayout) -> None:
    """The slider of `slice_position`'s slice (a volume with more than one slice in the plane); its value is
    kept while its tab is closed."""
    count = scan.array.shape[layout.slice_axis] if scan.kind == "volume" else 1
    if count > 1:
        st.slider("Slice", 0, count - 1, key=slice_key(layout.plane), persist_state="page",
                  help="Array index along the plane's normal")


def image_panels(session: ViewerSession, layout: PlaneLayout, index: int, mapping: IntensityMapping,
                 style: OverlayStyle | None) -> bytes | None:
    """Scan and overlay side by side; returns the overlay as PNG (None without a map) for export."""
    scan = session.scan
    grey = mapping(extract_slice(scan.array, layout, index))
    anomaly_map = _shown_map(session)
    map_slice = extract_slice(anomaly_map, layout, index) if anomaly_map is not None and style else None
    shape = display_shape(grey.shape[0], grey.shape[1], layout)
    scan_rgb, overlay_rgb = compose_panels(grey, map_slice, style or OverlayStyle(), shape)
    caption = _panel_caption(scan, layout, index, shape, mapping)
    physical = has_physical_spacing(scan)
    marks = PanelMarks(labels=screen_labels(layout.plane) if scan.kind == "volume" else None,
                       mm_per_pixel=layout.col_mm * grey.shape[1] / shape[1] if physical else None)
    left, right = st.columns(2)
    left.image(png_bytes(annotate(scan_rgb, marks)), caption=f"Scan · {caption}", output_format="PNG",
               width="stretch", alt=f"scan, {caption}")
    if overlay_rgb is None:
        right.info("No anomaly map yet: run inference from the sidebar.")
        return None
    result = session.shown()
    random_weights = bool(result is not None and result.random_weights)
    overlay_png = png_bytes(annotate(overlay_rgb, replace(marks, random_weights=random_weights)))
    right.image(overlay_png, caption=f"Overlay · {caption}", output_format="PNG", width="stretch",
                alt=f"overlay, {caption}")
    return overlay_png


def _shown_map(session: ViewerSession) -> np.ndarray | None:
    try:
        return session.shown_map()
    except UserInputError as error:
        st.error(plain(str(error)), icon=None)
        return None


def _panel_caption(scan: Scan, layout: PlaneLayout, index: int, shape: tuple[int, int],
                   mapping: IntensityMapping) -> str:
    """Where the slice is, how it is oriented and sized, and which grey-level mapping it shows."""
    if not has_physical_spacing(scan):
        return f"{shape[1]}x{shape[0]} px ({NO_PHYSICAL_SPACING}) · {mapping.description}"
    size = f"{shape[1]}x{shape[0]} px ({layout.col_mm:.2f} x {layout.row_mm:.2f} mm pixels)"
    count = scan.array.shape[layout.slice_axis]
    labels = screen_labels(layout.plane)
    where = slice_position_mm(scan.affine, scan.array.shape, layout, index)
    return (f"{layout.plane} slice {index} of {count - 1} at {where:.1f} mm · {size} · left {labels.left}, "
            f"right {labels.right}, top {labels.top}, bottom {labels.bottom} · {mapping.description}")


def score_plot(result: CaseResult) -> None:
    """Slice scores along the scored plane (drawn once per case); a click shows the slice picked."""
    document = result.document
    if document["kind"] != "volume":
        return
    plane = document["slice_axis"]
    key = f"{SCORE_PLOT_KEY_PREFIX}{hashlib.sha256(str(result.folder.resolve()).encode('utf-8')).hexdigest()[:12]}"
    st.vega_lite_chart(slice_score_spec(document["slice_scores"], document["top_slices"], plane), key=key,
                       on_select=lambda: _jump_to_clicked(key, plane, len(document["slice_scores"])),
                       selection_mode=SELECTION, width="stretch")


def _jump_to_clicked(key: str, plane: str, count: int) -> None:
    state = st.session_state.get(key)
    index = selected_slice(state.get("selection") if state is not None else None)
    if index is not None and 0 <= index < count:
        _jump(plane, index)


def jump_buttons(result: CaseResult) -> None:
    """One button per top slice of the scored plane, best first, in a row: a click shows that plane and
    slice."""
    document = result.document
    if document["kind"] != "volume":
        return
    plane = document["slice_axis"]
    row = st.container(horizontal=True, vertical_alignment="center")
    row.caption(f"Top {plane} slices (score)", width="content")
    for rank, slice_index in enumerate(document["top_slices"]):
        row.button(f"slice {slice_index} ({document['slice_scores'][slice_index]:.3f})", key=f"{JUMP_KEY_PREFIX}{rank}",
                   on_click=_jump, args=(plane, slice_index))


def _jump(plane: str, index: int) -> None:
    st.session_state[KEY_PLANE] = plane
    st.session_state[slice_key(plane)] = index


def exports(title: str, scan: Scan, result: CaseResult | None, layout: PlaneLayout, index: int,
            overlay_png: bytes | None) -> None:
    """Download the overlay on screen (PNG) and the whole map (NIfTI for volumes, .npy for 2-D images),
    named after the case's title (its neutral label while identifiers are hidden)."""
    if result is None or overlay_png is None:
        return
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", title).strip("._") or "case"
    left, right = st.columns(2)
    where = f"_{layout.plane}_{index:04d}" if scan.kind == "volume" else ""
    left.download_button("Download overlay (PNG)", overlay_png, file_name=f"{stem}{where}_overlay.png",
                         mime="image/png", key=KEY_DOWNLOAD_OVERLAY, on_click="ignore", width="stretch")
    map_path: Path = result.map_path
    suffix = ".nii.gz" if map_path.name.endswith(".nii.gz") else map_path.suffix
    right.download_button(f"Download map ({'NIfTI' if suffix == '.nii.gz' else 'NumPy'})", map_path.read_bytes,
                          file_name=f"{stem}_anomaly_map{suffix}", mime=MAP_MIME[suffix], key=KEY_DOWNLOAD_MAP,
                          on_click="ignore", width="stretch")
