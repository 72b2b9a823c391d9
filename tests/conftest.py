"""Shared test fixtures: where ../shared lives, and a tiny random backbone loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDCLIP_AD_SHARED", REPO_ROOT.parent / "shared"))
PARITY = SHARED / "fixtures" / "parity"
PARITY_IMAGES = ("phantom_lesion", "phantom_normal", "noise")
PARITY_LAYER_SETTINGS = {"L24": (24,), "L6_12_18_24": (6, 12, 18, 24)}

# `bash .ci/run` runs the suite in one pytest-xdist worker per core: each worker (and every process its tests
# start, which inherit the variable) then computes on one thread, so workers do not fight over the cores.
# Set before any test module imports torch; a value the caller chose wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY.is_dir():
        pytest.fail(f"parity fixture missing at {PARITY}: set MEDCLIP_AD_SHARED to the shared/ folder")
    return PARITY


@pytest.fixture(scope="session")
def tiny_backbone():
    from medclip_ad.modeling.clip_backbone import load_clip

    return load_clip("random:tiny")
