"""medclip-ad viewer: anomaly heatmaps over scans, for the radiologists who decide what a flag means.

    streamlit run app/viewer.py                                              # upload a study
    streamlit run app/viewer.py -- --case medclip-ad-demo/results/dicom      # open an infer output
    streamlit run app/viewer.py -- --data-root /data/studies                 # browse server folders
    streamlit run app/viewer.py -- --data-root /data --weights-dir /models   # offer the weights in /models

Streamlit puts this file's folder on the import path, so the viewer's modules import by their names.
This script only lays the page out; each part lives in its own module.
"""

from __future__ import annotations

import os
import sys

import streamlit as st

from medclip_viewer.access import exposure_warning, require_password
from medclip_viewer.display_controls import default_threshold, intensity_controls, overlay_controls
from medclip_viewer.findings_panel import findings_panel
from medclip_viewer.launch import parse_launch_options
from medclip_viewer.model_panel import model_section
from medclip_viewer.open_panel import open_case_panel
from medclip_viewer.niivue_viewer import STILL_PLACEHOLDERS
from medclip_viewer.reading_view import reading_view
from medclip_viewer.review_panel import (
    case_header,
    exports,
    image_panels,
    jump_buttons,
    plane_control,
    provenance,
    random_weights_banner,
    score_metrics,
    score_plot,
    slice_position,
    slice_slider,
)
from medclip_viewer.state import KEY_SECTION, KEY_SHOW_PATIENT, viewer_session
from medclip_viewer.verdict_panel import verdict_panel
from medclip_viewer.worklist_panel import read_ahead_neighbours, worklist_table

NOT_FOR_DIAGNOSIS = "Research software, not for diagnosis: scores and heatmaps are for review by qualified people."
TOP_SLICES_TAB = "Top slices"
SCORES_TAB = "Slice scores"
IMAGES_TAB = "Slice images (PNG) and export"
FINDINGS_TAB = "Findings"
PROVENANCE_TAB = "Model provenance"

st.set_page_config(page_title="medclip-ad viewer", layout="wide")
st.html(STILL_PLACEHOLDERS)
require_password()
launch = parse_launch_options(sys.argv[1:], os.environ)
session = viewer_session()
show_patient = bool(st.session_state.get(KEY_SHOW_PATIENT, False))
st.sidebar.title("medclip-ad viewer")
st.sidebar.caption(NOT_FOR_DIAGNOSIS)
open_box, display_box, model_box, privacy_box = (st.sidebar.container() for _ in range(4))
with open_box:
    open_case_panel(session, launch, show_patient)
with model_box:
    model_section(session, launch)
with privacy_box:
    st.header("Privacy")
    st.toggle("Show patient identifiers", value=False, key=KEY_SHOW_PATIENT,
              help="Off: no identifiers, and the case is called by a neutral label instead of its file name.")

# The image comes first (it fits a 1280x800 screen): one row of worklist controls above it, the case's
# header, score and review beside it, everything else in tabs below it. The viewer goes to the browser as
# early as the script allows (the worklist row, header and score are filled in after it), and only the open
# tab's content is built: the browser draws the viewer's page on the same thread as the rest of the page.
exposure_warning()
worklist_box = st.container()
if session.scan is None:
    with worklist_box:
        worklist_table(show_patient)
    st.info("Open a case from the sidebar: a results folder, a folder under the data root, or an upload.")
    st.stop()

scan, result = session.scan, session.shown()
title = scan.name if show_patient else session.case_label
with display_box:
    st.header("Display")
    mapping = intensity_controls(session, scan, result.document.get("intensity") if result else None)
    style = overlay_controls(result.map_max, lambda: default_threshold(result, scan)) \
        if result else None
viewer_column, side_column = st.columns([3, 1])
with side_column:
    header_box = st.container()
    plane = plane_control(scan, result)
    review_box = st.container()
layout, index = slice_position(scan, result, plane)
with viewer_column:
    reading_view(session, layout, index, mapping, style)
    scored_volume = result is not None and scan.kind == "volume"
    # the first tab is open at first, so it is a cheap one: the score curve (a Vega-Lite chart) and the
    # PNG panels each delayed the viewer's first image by about a second (benchmarks/bench_viewer.py)
    sections = [name for name, shown in ((TOP_SLICES_TAB, scored_volume), (SCORES_TAB, scored_volume),
                                         (IMAGES_TAB, True),
                                         (FINDINGS_TAB, result is not None and "flagged" in result.document),
                                         (PROVENANCE_TAB, result is not None)) if shown]
    tabs = dict(zip(sections, st.tabs(sections, key=KEY_SECTION, on_change="rerun")))
    section = next(name for name in sections if tabs[name].open)
with worklist_box:
    worklist_table(show_patient)
with header_box:
    case_header(scan, title, show_patient)
    if result is None:
        st.info("No results for this case yet: choose the model in the sidebar and press Run inference.")
    else:
        random_weights_banner(result)
        score_metrics(result, layout, index)
with tabs[section]:
    if section == TOP_SLICES_TAB:
        jump_buttons(result)
    elif section == SCORES_TAB:
        score_plot(result)
    elif section == IMAGES_TAB:
        slice_slider(scan, layout)
        overlay_png = image_panels(session, layout, index, mapping, style)
        exports(title, scan, result, layout, index, overlay_png)
    elif section == FINDINGS_TAB:
        findings_panel(result)
    else:
        provenance(result)
if result is not None and not result.folder.resolve().is_relative_to(session.workdir.resolve()):
    with review_box:
        verdict_panel(result, title, layout.plane if scan.kind == "volume" else None, index)
read_ahead_neighbours()
