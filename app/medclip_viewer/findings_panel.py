"""A calibrated result's verdict: flag, operating point, percentile among the calibration normals, and the
lesion components, each with a jump to its peak slice. Every value is shown as plain text."""

from __future__ import annotations

import streamlit as st

from medclip_viewer.cases import CaseResult
from medclip_viewer.state import KEY_PLANE, slice_key

FINDING_KEY_PREFIX = "finding_jump_"
VOLUME_COLUMNS: tuple[str, ...] = ("label", "volume_ml", "largest_diameter_mm", "peak_score", "mean_score",
                                   "first_slice", "last_slice", "peak_slice")
IMAGE_COLUMNS: tuple[str, ...] = ("label", "pixels", "largest_diameter_px", "peak_score", "mean_score")


def findings_panel(result: CaseResult) -> None:
    """Nothing for a result made without a calibration."""
    document = result.document
    if "flagged" not in document:
        return
    verdict = "FLAGGED" if document["flagged"] else "not flagged"
    st.text(f"{verdict} at FPR {document['operating_point']} (score > {document['threshold']:.4f})")
    st.text(f"percentile among {document['calibration']['normals']} calibration normals: "
            f"{document['percentile']:.1f}")
    components = document.get("components", [])
    st.text(f"{len(components)} lesion component(s)")
    if not components:
        return
    columns = VOLUME_COLUMNS if document["kind"] == "volume" else IMAGE_COLUMNS
    st.dataframe([{name: component.get(name) for name in columns} for component in components], hide_index=True)
    if document["kind"] != "volume":
        return
    plane = document["slice_axis"]
    for component in components:
        st.button(f"component {component['label']}: peak slice {component['peak_slice']}",
                  key=f"{FINDING_KEY_PREFIX}{component['label']}", on_click=_jump,
                  args=(plane, int(component["peak_slice"])), width="stretch")


def _jump(plane: str, index: int) -> None:
    st.session_state[KEY_PLANE] = plane
    st.session_state[slice_key(plane)] = index
