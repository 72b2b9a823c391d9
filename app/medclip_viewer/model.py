"""The detector behind the viewer's "Run inference": settings to a config, one loaded model per config,
and a case scored by the same `run_case` as `medclip-ad infer`, so the viewer's results are the CLI's.

Loading CLIP takes seconds to minutes, so the predictor is a Streamlit resource shared by all sessions
and reruns, keyed by the whole config; results land in the session's folder as ordinary case folders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import streamlit as st
from medclip_ad.config import PLANE_NORMALS, DetectorConfig
from medclip_ad.inference.case import CaseOptions, resolve_slice_axis, run_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.scan import Scan
from medclip_ad.methods import CHECKPOINT_FREE_METHOD
from medclip_ad.methods.registry import METHOD_NAMES, checkpoint_method
from medclip_ad.modeling.clip_backbone import RANDOM_PREFIX

from medclip_viewer.cases import CaseResult, load_result

# "auto" picks the method the product recommends: the checkpoint's own method when one is given (learned
# prompts for a reference file), else the training-free one.
METHOD_AUTO = "auto"
METHOD_CHOICES: tuple[str, ...] = (METHOD_AUTO, *METHOD_NAMES)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
ACQUISITION_PLANE = "acquisition plane"
SCORED_PLANES: tuple[str, ...] = (ACQUISITION_PLANE, *PLANE_NORMALS)
# How many loaded models are kept; each is a full CLIP in memory.
MAX_LOADED_MODELS = 2


def detector_config(clip_weights: str, prompts: str, method: str, device: str, image_size: int) -> DetectorConfig:
    """The sidebar's choices as a config; `auto` means the checkpoint's method with one, ensemble without."""
    prompt_path = prompts.strip() or None
    if method == METHOD_AUTO:
        method = checkpoint_method(prompt_path) if prompt_path else CHECKPOINT_FREE_METHOD
    return DetectorConfig(clip_weights=clip_weights.strip(), prompts=prompt_path, method=method,
                          image_size=int(image_size), device=device)


def uses_random_weights(config: DetectorConfig) -> bool:
    """Whether a config asks for the random test CLIP, whose outputs must be flagged everywhere."""
    return config.clip_weights.startswith(RANDOM_PREFIX)


@st.cache_resource(max_entries=MAX_LOADED_MODELS, show_spinner="Loading the model (once per settings)...")
def cached_predictor(config: DetectorConfig) -> AnomalyPredictor:
    """One predictor per config for the whole server: text features are computed once, reruns reuse it."""
    return AnomalyPredictor(config)


def scoring_options(plane: str, aggregation: str, top_k: int) -> CaseOptions:
    """The sidebar's volume scoring choices; `ACQUISITION_PLANE` scores along the plane the scan was taken in."""
    return CaseOptions(axis=None if plane == ACQUISITION_PLANE else plane, aggregation=aggregation, top_k=int(top_k))


def result_key(case_key: str, config: DetectorConfig, options: CaseOptions) -> str:
    """Identity of a case scored by a model with given scoring options: results are cached under it."""
    return f"{case_key}|{config!r}|{options!r}"


def run_inference(predictor: AnomalyPredictor, scan: Scan, results_root: Path, key: str, options: CaseOptions,
                  report: Callable[[float, str], None]) -> CaseResult:
    """Score `scan` into its own case folder under `results_root`, calling `report(fraction, text)` as
    slices finish; returns the result as if opened from disk."""
    out_dir = results_root / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    options = replace(options, overwrite=True)
    total = scan.array.shape[resolve_slice_axis(scan, options)] if scan.kind == "volume" else 1
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        report(done / total, f"{done} of {total} slices scored")

    report(0.0, f"scoring {total} slice{'s' if total > 1 else ''}")
    run_case(predictor, scan, out_dir, options, progress=advance)
    report(1.0, "done")
    return load_result(out_dir / scan.name)
