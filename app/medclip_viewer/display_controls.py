"""Sidebar "Display": grey levels (CT window/level presets and free W/L, MR percentiles) and the overlay
(opacity, colormap, threshold), as PACS viewers offer them.

Picking a preset fills width and level; editing either turns the preset into "custom", so the controls
never disagree. The overlay's colour scale is the map's full range and is not a control: the threshold
only hides low values, it never rescales the colours.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.io.intensity import CT_WINDOW_PRESETS, DEFAULT_CT_PRESET, IntensityMapping, resolve_window
from medclip_ad.io.scan import Scan

from medclip_viewer.case_cache import map_percentile_shared
from medclip_viewer.cases import CaseResult
from medclip_viewer.intensity import (
    MODE_LABELS,
    PERCENTILE_PRESETS,
    available_modes,
    default_mode,
    model_window_name,
    percentile_mapping,
    stored_mapping,
    window_mapping,
)
from medclip_viewer.state import (
    KEY_COLORMAP,
    KEY_INTENSITY_MODE,
    KEY_OPACITY,
    KEY_PERCENTILES,
    KEY_THRESHOLD,
    KEY_WINDOW_LEVEL,
    KEY_WINDOW_MEMORY,
    KEY_WINDOW_PRESET,
    KEY_WINDOW_WIDTH,
    ViewerSession,
)

CUSTOM_WINDOW = "custom"
COLORMAPS: tuple[str, ...] = ("jet", "turbo", "inferno", "magma", "viridis", "hot")
# Threshold slider resolution, as a fraction of the map's range.
THRESHOLD_STEPS = 100
WINDOW_STEP_HU = 10.0
# Without a calibration, the overlay starts by colouring only the map's top tenth.
DEFAULT_THRESHOLD_PERCENTILE = 90.0


def intensity_controls(session: ViewerSession, scan: Scan, model_intensity: str | None) -> IntensityMapping:
    """Choose how stored values become grey levels; starts from what the model saw."""
    modes = available_modes(scan)
    if st.session_state.get(KEY_INTENSITY_MODE) not in modes:
        st.session_state[KEY_INTENSITY_MODE] = default_mode(scan, model_intensity)
    mode = st.radio("Grey levels", modes, format_func=MODE_LABELS.get, key=KEY_INTENSITY_MODE)
    if mode == "ct_window":
        return _window_controls(model_window_name(model_intensity))
    if mode == "percentiles":
        name = st.selectbox("Percentile preset", list(PERCENTILE_PRESETS), key=KEY_PERCENTILES)
        cache_key = ("percentiles", name)
        if cache_key not in session.mappings:
            session.mappings[cache_key] = percentile_mapping(scan.array, PERCENTILE_PRESETS[name])
        return session.mappings[cache_key]
    return stored_mapping(scan)


def _window_controls(model_window: str | None) -> IntensityMapping:
    """Preset selector plus free width/level in HU, initialised to the model's window. Streamlit forgets a
    widget's value on runs where it is not drawn (grey levels switched to percentiles), so the window is
    also kept in `KEY_WINDOW_MEMORY`, with the reader's own custom window, which "custom" brings back."""
    memory = st.session_state.setdefault(KEY_WINDOW_MEMORY, _initial_window(model_window))
    if KEY_WINDOW_PRESET not in st.session_state:
        st.session_state[KEY_WINDOW_PRESET] = memory["preset"]
        st.session_state[KEY_WINDOW_WIDTH], st.session_state[KEY_WINDOW_LEVEL] = memory["window"]
    preset = st.selectbox("Window preset", [*CT_WINDOW_PRESETS, CUSTOM_WINDOW], key=KEY_WINDOW_PRESET,
                          on_change=_apply_preset, format_func=_preset_label)
    width = st.number_input("Window width (HU)", min_value=1.0, step=WINDOW_STEP_HU, key=KEY_WINDOW_WIDTH,
                            on_change=_mark_custom)
    level = st.number_input("Window level (HU)", step=WINDOW_STEP_HU, key=KEY_WINDOW_LEVEL, on_change=_mark_custom)
    memory.update(preset=preset, window=(width, level))
    if preset == CUSTOM_WINDOW:
        memory["custom"] = (width, level)
    return window_mapping(width, level)


def opening_mapping(scan: Scan, model_intensity: str | None) -> IntensityMapping:
    """The grey levels a case opens with (what `intensity_controls` starts from before the reader changes
    anything): the model's CT window or the default one, the first percentile preset, or as stored."""
    mode = default_mode(scan, model_intensity)
    if mode == "ct_window":
        return window_mapping(*_initial_window(model_window_name(model_intensity))["window"])
    if mode == "percentiles":
        return percentile_mapping(scan.array, next(iter(PERCENTILE_PRESETS.values())))
    return stored_mapping(scan)


def _initial_window(model_window: str | None) -> dict:
    initial = resolve_window(model_window or DEFAULT_CT_PRESET)
    window = (float(initial.width), float(initial.level))
    preset = initial.name if initial.name in CT_WINDOW_PRESETS else CUSTOM_WINDOW
    return {"preset": preset, "window": window, "custom": window if preset == CUSTOM_WINDOW else None}


def _preset_label(name: str) -> str:
    preset = CT_WINDOW_PRESETS.get(name)
    return f"{name.replace('_', ' ')} ({preset.width:g}/{preset.level:g})" if preset else name


def _apply_preset() -> None:
    """A preset fills width and level; "custom" brings back the reader's last custom window."""
    preset = CT_WINDOW_PRESETS.get(st.session_state[KEY_WINDOW_PRESET])
    custom = st.session_state.get(KEY_WINDOW_MEMORY, {}).get("custom")
    window = (float(preset.width), float(preset.level)) if preset is not None else custom
    if window is not None:
        st.session_state[KEY_WINDOW_WIDTH], st.session_state[KEY_WINDOW_LEVEL] = window


def _mark_custom() -> None:
    st.session_state[KEY_WINDOW_PRESET] = CUSTOM_WINDOW


def default_threshold(result: CaseResult, scan: Scan) -> float:
    """Where the threshold starts: the calibration's pixel threshold when the case has one, else the
    map's DEFAULT_THRESHOLD_PERCENTILE, so background (most of a scan) starts uncoloured."""
    calibrated = (result.document.get("calibration") or {}).get("pixel_threshold")
    if isinstance(calibrated, (int, float)):
        return float(calibrated)
    start = map_percentile_shared(result, scan, DEFAULT_THRESHOLD_PERCENTILE)
    return OverlayStyle().threshold if start is None else start


def opening_threshold(map_max: float, start: float) -> float:
    """The threshold slider's first value: `start` on the slider's steps, at most `map_max`."""
    step = map_max / THRESHOLD_STEPS
    return min(map_max, round(start / step) * step)


def overlay_controls(map_max: float, start_threshold: Callable[[], float] = lambda: OverlayStyle().threshold
                     ) -> OverlayStyle:
    """Opacity, colormap and threshold; the colour scale stays fixed at [0, map_max]. `start_threshold`
    is asked only when a case opens (it may read the whole map)."""
    defaults = OverlayStyle()
    opacity = st.slider("Overlay opacity", 0.0, 1.0, value=defaults.opacity, step=0.05, key=KEY_OPACITY)
    colormap = st.selectbox("Colormap", COLORMAPS, index=COLORMAPS.index(defaults.colormap), key=KEY_COLORMAP)
    if not 0.0 <= st.session_state.get(KEY_THRESHOLD, defaults.threshold) <= map_max:
        st.session_state.pop(KEY_THRESHOLD)
    step = map_max / THRESHOLD_STEPS
    if KEY_THRESHOLD not in st.session_state:
        st.session_state[KEY_THRESHOLD] = opening_threshold(map_max, start_threshold())
    threshold = st.slider(f"Threshold (map units, 0 to {map_max:g})", 0.0, map_max, step=step,
                          key=KEY_THRESHOLD, help="Map values below it are not coloured; colours keep their scale.")
    return OverlayStyle(colormap=colormap, opacity=opacity, vmax=map_max, threshold=threshold)
