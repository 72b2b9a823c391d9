"""Map stored values (HU, MR signal, 16-bit counts) to the 8-bit display range CLIP was trained on.

CLIP and the published prompts saw 8-bit photographs and screenshots, so a scan must look to the model
the way it looks to a reader on screen:
- CT: a window (width/level in HU), soft tissue by default; presets and an explicit (width, level) can
  override it. A scan is CT when `--modality CT` says so, else when its DICOM Modality tag says so, else
  (no tag: NIfTI) when its values are Hounsfield units: at least 1 % of the finite voxels lie below
  -500 and at least a fifth of those are air, within 100 of -1000. MR signal, PET and counts are never
  that negative; a CT without air in the field of view is missed, so `--modality CT` decides it.
- MR, anything unknown, and 16-bit or float 2-D images: robust percentiles (0.5 to 99.5) of the whole
  volume, so every slice of a volume shares one mapping and slice maps stay comparable.
- 8-bit 2-D images: unchanged, bit for bit, as the reference pipeline feeds them.

The mapping is computed once per scan (`IntensityMapping.from_scan`) and applied to any part of it
(`mapping(slice_array)`), which keeps memory bounded on large volumes. Rounding is half up after
clipping: with window 400/40, -160 HU -> 0, 240 HU -> 255 and 40 HU (127.5) -> 128. NaN maps to 0,
+Inf to 255 and -Inf to 0. Where the range is empty (a constant volume) values at or below it map to
0 and values above to 255, so a constant volume becomes a constant black image, without dividing by 0.
(DICOM MONOCHROME1 data arrives already inverted by the reader, so bright always means dense here.)
`IntensityMapping.rule` says which rule chose the mapping; scores.json records it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from medclip_ad.config import MODALITIES
from medclip_ad.errors import UserInputError
from medclip_ad.io.scan import Scan

DISPLAY_MAX: int = 255
ROBUST_PERCENTILES: tuple[float, float] = (0.5, 99.5)


@dataclass(frozen=True)
class WindowPreset:
    """A named CT window: `width` and `level` (centre) in Hounsfield units."""

    name: str
    width: float
    level: float

    @property
    def bounds(self) -> tuple[float, float]:
        """The HU values shown as black and as white."""
        return (self.level - self.width / 2.0, self.level + self.width / 2.0)


CT_WINDOW_PRESETS: dict[str, WindowPreset] = {
    preset.name: preset
    for preset in (
        WindowPreset("brain", width=80.0, level=40.0),
        WindowPreset("soft_tissue", width=400.0, level=40.0),
        WindowPreset("lung", width=1500.0, level=-600.0),
        WindowPreset("bone", width=2500.0, level=480.0),
    )
}
DEFAULT_CT_PRESET: str = "soft_tissue"

# Hounsfield detection for scans without a modality tag (see the module docstring).
HOUNSFIELD_BELOW: float = -500.0
AIR_HU: float = -1000.0
AIR_TOLERANCE_HU: float = 100.0
MIN_FRACTION_BELOW: float = 0.01
MIN_AIR_FRACTION_OF_BELOW: float = 0.2

Window = WindowPreset | tuple[float, float] | str


@dataclass(frozen=True)
class IntensityMapping:
    """How one scan's stored values become 8-bit display values.

    `bounds` is None for data shown as stored (8-bit 2-D images); otherwise values from `bounds[0]` to
    `bounds[1]` spread linearly over 0..255. `description` names the mapping and `rule` says why it was
    chosen, for provenance.
    """

    bounds: tuple[float, float] | None
    description: str
    rule: str = ""

    @classmethod
    def from_scan(cls, scan: Scan, window: Window | None = None, modality: str | None = None) -> IntensityMapping:
        """Choose the mapping for `scan`: an explicit `window` (preset name, preset, or (width, level))
        first, else CT's default window for a CT (by `modality`, the tag, or Hounsfield values), else
        percentiles of the whole array."""
        if window is not None:
            preset = resolve_window(window)
            return cls(preset.bounds, f"window {preset.name}", "--window")
        if scan.array.dtype == np.uint8 and scan.kind == "image":
            return cls(None, "8-bit image, unchanged", "8-bit image")
        is_ct, rule = _ct_decision(scan, modality)
        if is_ct:
            preset = CT_WINDOW_PRESETS[DEFAULT_CT_PRESET]
            return cls(preset.bounds, f"window {preset.name}", rule)
        low, high = ROBUST_PERCENTILES
        return cls(percentile_bounds(scan.array, scan.source), f"percentiles {low:g}-{high:g}", rule)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Map any part of the scan (a slice, a batch of slices, the whole array) to uint8."""
        if self.bounds is None:
            return np.asarray(array)
        return to_uint8(array, *self.bounds)


def _ct_decision(scan: Scan, modality: str | None) -> tuple[bool, str]:
    """Whether to window `scan` as CT, and the rule that decided it."""
    if modality is not None:
        if modality not in MODALITIES:
            raise UserInputError(f"--modality {modality}: choose from {', '.join(MODALITIES)}")
        return modality == "CT", f"--modality {modality}"
    if scan.modality:
        return scan.modality.upper() == "CT", f"DICOM Modality {scan.modality}"
    below, air = hounsfield_evidence(scan.array)
    if below >= MIN_FRACTION_BELOW and air >= MIN_AIR_FRACTION_OF_BELOW:
        return True, (f"Hounsfield units detected: {below:.1%} of voxels below {HOUNSFIELD_BELOW:g}, "
                      f"{air:.0%} of those air ({AIR_HU:g} +/- {AIR_TOLERANCE_HU:g})")
    return False, "no modality tag and no Hounsfield air: not CT"


def hounsfield_evidence(array: np.ndarray) -> tuple[float, float]:
    """(fraction of finite values below -500, fraction of those within 100 of -1000): how CT-like values are."""
    values = np.asarray(array)
    if not np.issubdtype(values.dtype, np.signedinteger) and not np.issubdtype(values.dtype, np.floating):
        return 0.0, 0.0  # unsigned data cannot hold Hounsfield units
    finite = int(np.isfinite(values).sum()) if np.issubdtype(values.dtype, np.floating) else values.size
    below = int(np.count_nonzero(values < HOUNSFIELD_BELOW))
    if finite == 0 or below == 0:
        return 0.0, 0.0
    air = int(np.count_nonzero((values >= AIR_HU - AIR_TOLERANCE_HU) & (values <= AIR_HU + AIR_TOLERANCE_HU)))
    return below / finite, air / below


def resolve_window(window: Window) -> WindowPreset:
    """A preset from its name, a `WindowPreset`, a (width, level) pair, or text "WIDTH/LEVEL" or
    "WIDTH,LEVEL" as typed on a command line; a width that is not positive is refused."""
    if isinstance(window, WindowPreset):
        return window
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key in CT_WINDOW_PRESETS:
            return CT_WINDOW_PRESETS[key]
        match = re.fullmatch(r"\s*([-+]?[\d.]+)\s*[/,]\s*([-+]?[\d.]+)\s*", window)
        if match is None:
            names = ", ".join(CT_WINDOW_PRESETS)
            raise UserInputError(f"--window {window!r}: expected a preset ({names}) or WIDTH/LEVEL, e.g. 400/40")
        window = (float(match.group(1)), float(match.group(2)))
    width, level = (float(v) for v in window)
    if not (np.isfinite(width) and np.isfinite(level) and width > 0):
        raise UserInputError(f"--window {width:g}/{level:g}: the width must be a positive number of HU")
    return WindowPreset(f"{width:g}/{level:g}", width, level)


def percentile_bounds(array: np.ndarray, source: object = "input") -> tuple[float, float]:
    """Robust display bounds of a whole array from its finite values (NaN and Inf ignored)."""
    values = np.asarray(array)
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise UserInputError(f"{source}: every value is NaN or infinite, there is nothing to show")
    low, high = np.percentile(values, ROBUST_PERCENTILES)
    return (float(low), float(high))


def to_uint8(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Spread [low, high] linearly over 0..255, clip, round half up; NaN -> 0, +/-Inf clipped.

    Computed in float64, so window arithmetic on integer HU is exact (-160..240 puts 40 at 127.5).
    """
    values = np.asarray(array, dtype=np.float64)
    if high > low:
        scaled = (values - low) * DISPLAY_MAX / (high - low)
    else:
        scaled = np.where(values > high, float(DISPLAY_MAX), 0.0)
    scaled = np.nan_to_num(np.clip(scaled, 0.0, DISPLAY_MAX), nan=0.0)
    return np.floor(scaled + 0.5).astype(np.uint8)
