"""The per-slice score curve: where along the volume the model found something. A click on it jumps there.

A Vega-Lite chart drawn by the browser: its spec depends on the case alone (not on the slice on screen,
which lives in the NiiVue view), so Streamlit draws it once per case and reruns leave it as it is. A click
selects the nearest slice; the page then shows that slice with the crosshair on its peak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SELECTION = "jump"
CHART_HEIGHT_PX = 150
TOP_SLICE_COLOUR = "#d62728"
CURVE_COLOUR = "#1f77b4"


def slice_score_spec(slice_scores: Sequence[float], top_slices: Sequence[int], plane: str) -> dict:
    """Scores against slice index with the top slices in red; clicking anywhere picks the nearest slice."""
    top = {int(index) for index in top_slices}
    values = [{"slice": index, "score": float(score), "top": index in top} for index, score in enumerate(slice_scores)]
    x = {"field": "slice", "type": "quantitative", "title": f"{plane} slice index (click to jump)",
         "scale": {"domain": [0, max(len(values) - 1, 1)], "nice": False}}
    y = {"field": "score", "type": "quantitative", "title": "slice score", "scale": {"zero": False}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "height": CHART_HEIGHT_PX,
        "data": {"values": values},
        "encoding": {"x": x, "y": y},
        "layer": [
            {"mark": {"type": "line", "color": CURVE_COLOUR, "strokeWidth": 1.2}},
            {"transform": [{"filter": "datum.top"}],
             "mark": {"type": "point", "filled": True, "color": TOP_SLICE_COLOUR, "size": 36},
             "encoding": {"tooltip": [{"field": "slice", "title": "top slice"},
                                      {"field": "score", "format": ".4f"}]}},
            {"params": [{"name": SELECTION, "select": {"type": "point", "fields": ["slice"], "on": "click",
                                                         "nearest": True, "clear": False}}],
             "mark": {"type": "point", "opacity": 0, "size": 80},
             "encoding": {"tooltip": [{"field": "slice"}, {"field": "score", "format": ".4f"}]}},
        ],
    }


def selected_slice(selection: Mapping | None) -> int | None:
    """The slice a click on the chart picked, from Streamlit's selection state (None when nothing is)."""
    picked = (selection or {}).get(SELECTION) or []
    if isinstance(picked, Mapping):
        picked = [picked]
    for point in picked:
        value = point.get("slice") if isinstance(point, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return None
