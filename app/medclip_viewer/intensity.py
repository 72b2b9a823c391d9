"""How the viewer turns stored values into grey levels: CT windows, MR percentiles, or 8-bit as stored.

The model saw each scan through one mapping (recorded in scores.json as `intensity`); the reader may
look through another, because a lesion that is obvious in a brain window can vanish in a bone window.
The mappings are the package's own (`medclip_ad.io.intensity`), so a preset shows exactly the grey levels
the model was given under that preset. Percentile bounds are taken over the whole volume, like the
model's, so scrolling never changes the brightness of a tissue.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from medclip_ad.errors import UserInputError
from medclip_ad.io.intensity import CT_WINDOW_PRESETS, ROBUST_PERCENTILES, IntensityMapping, resolve_window
from medclip_ad.io.scan import Scan

IntensityMode = Literal["ct_window", "percentiles", "as_stored"]

MODE_LABELS: dict[str, str] = {
    "ct_window": "CT window / level",
    "percentiles": "Percentiles (MR, other)",
    "as_stored": "As stored (8-bit)",
}

# Percentile presets for MR and other uncalibrated data: (low, high) percentiles of the whole scan.
PERCENTILE_PRESETS: dict[str, tuple[float, float]] = {
    "robust (as the model)": ROBUST_PERCENTILES,
    "1-99": (1.0, 99.0),
    "2-98 (high contrast)": (2.0, 98.0),
    "full range": (0.0, 100.0),
}

# The prefix `IntensityMapping.description` gives a CT window (e.g. "window brain").
WINDOW_DESCRIPTION_PREFIX = "window "


def available_modes(scan: Scan) -> list[str]:
    """Modes that make sense for a scan: 8-bit images can be shown as stored; anything else may be CT
    (NIfTI files carry no modality, so a CT window is always offered) or anything else (percentiles)."""
    if scan.kind == "image" and scan.array.dtype == np.uint8:
        return ["as_stored", "percentiles"]
    return ["ct_window", "percentiles"]


def default_mode(scan: Scan, model_intensity: str | None) -> str:
    """The mode the model used when known (scores.json `intensity`), else the modality's usual one."""
    modes = available_modes(scan)
    if "as_stored" in modes:
        return "as_stored"
    if (model_intensity or "").startswith(WINDOW_DESCRIPTION_PREFIX) or (scan.modality or "").upper() == "CT":
        return "ct_window"
    return "percentiles"


def model_window_name(model_intensity: str | None) -> str | None:
    """The CT preset or "W/L" the model's input was windowed with, from scores.json `intensity`."""
    text = model_intensity or ""
    return text[len(WINDOW_DESCRIPTION_PREFIX):] if text.startswith(WINDOW_DESCRIPTION_PREFIX) else None


def window_mapping(width: float, level: float) -> IntensityMapping:
    """A CT window from free width/level (HU), named after the preset it equals; a non-positive width is
    refused with a clear message."""
    window = resolve_window((width, level))
    named = next((p for p in CT_WINDOW_PRESETS.values() if (p.width, p.level) == (window.width, window.level)), window)
    return IntensityMapping(named.bounds, f"{WINDOW_DESCRIPTION_PREFIX}{named.name}")


def percentile_mapping(array: np.ndarray, percentiles: tuple[float, float]) -> IntensityMapping:
    """Bounds at two percentiles of the whole array's finite values (NaN and Inf ignored)."""
    values = np.asarray(array)
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
    if values.size == 0:
        raise UserInputError("every value is NaN or infinite, there is nothing to show")
    low, high = np.percentile(values, percentiles)
    return IntensityMapping((float(low), float(high)), f"percentiles {percentiles[0]:g}-{percentiles[1]:g}")


def stored_mapping(scan: Scan) -> IntensityMapping:
    """8-bit images exactly as stored, bit for bit, as the model received them."""
    return IntensityMapping.from_scan(scan)
