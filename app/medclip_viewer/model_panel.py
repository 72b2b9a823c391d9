"""Sidebar "Model": which detector scores the open case, and the button that runs it with a progress bar.

CLIP weights and checkpoints are picked from a list: the built-in sources and the files of the
`--weights-dir` chosen at launch. A visitor never types a server path, so no file the viewer did not
offer (an uploaded TorchScript payload, say) can be loaded as a model.

Random weights are allowed (they show the workflow on machines without CLIP weights) but the choice is
flagged in red before anything runs, as every result made with them is flagged after.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from medclip_ad.config import DetectorConfig
from medclip_ad.constants import IMAGE_SIZE
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import CaseOptions
from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING
from medclip_ad.inference.volume import AGGREGATIONS
from medclip_ad.limits import MAX_WEIGHT_FILES

from medclip_viewer.confinement import Scope
from medclip_viewer.display_text import plain
from medclip_viewer.launch import LaunchOptions
from medclip_viewer.model import (
    DEVICES,
    METHOD_AUTO,
    METHOD_CHOICES,
    SCORED_PLANES,
    cached_predictor,
    detector_config,
    result_key,
    run_inference,
    scoring_options,
    uses_random_weights,
)
from medclip_viewer.state import (
    KEY_AGGREGATION,
    KEY_CLIP_WEIGHTS,
    KEY_DEVICE,
    KEY_IMAGE_SIZE,
    KEY_METHOD,
    KEY_PROMPTS,
    KEY_RUN,
    KEY_SCORED_PLANE,
    KEY_TOP_K,
    ViewerSession,
)

BUILT_IN_WEIGHTS: tuple[str, ...] = (DetectorConfig().clip_weights, "random:tiny")
NO_CHECKPOINT = "(none)"
WEIGHT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".safetensors")
# ViT patches are 14 px: sizes are offered in whole patches.
PATCH_PX = 14


def model_panel(weights_dir: Path | None) -> tuple[DetectorConfig, CaseOptions]:
    """The detector settings as a config (validated when the model loads, not while typing), and how
    volumes are scored."""
    st.header("Model")
    offered = weight_files(weights_dir)
    weights = st.selectbox("CLIP weights", [*BUILT_IN_WEIGHTS, *offered], key=KEY_CLIP_WEIGHTS,
                           help="openai (downloaded once), random:tiny (test only), or a file of the weights "
                                "folder the viewer was started with (--weights-dir)")
    prompts = st.selectbox("Prompt checkpoint", [NO_CHECKPOINT, *offered], key=KEY_PROMPTS,
                           help="anomalyclip prompts (.safetensors or the reference .pth), an rwda head or adaclip "
                                "weights from the weights folder; without one the ensemble method runs.")
    method = st.selectbox("Method", METHOD_CHOICES, key=KEY_METHOD,
                          help=f"{METHOD_AUTO}: the checkpoint's method, else ensemble")
    device = st.selectbox("Device", DEVICES, key=KEY_DEVICE)
    image_size = st.number_input("Image size (px)", min_value=PATCH_PX * 8, value=IMAGE_SIZE, step=PATCH_PX,
                                 key=KEY_IMAGE_SIZE, help=f"{IMAGE_SIZE} is the published setting")
    config = detector_config(_offered_path(weights_dir, weights, offered),
                             _offered_path(weights_dir, prompts, offered) if prompts != NO_CHECKPOINT else "",
                             method, device, int(image_size))
    if uses_random_weights(config):
        st.error(RANDOM_WEIGHTS_WARNING)
    with st.expander("Volume scoring"):
        plane = st.selectbox("Score slices along", SCORED_PLANES, key=KEY_SCORED_PLANE,
                             help="The acquisition plane is how the scanner took the slices; the map covers the "
                                  "whole volume whichever plane is scored.")
        aggregation = st.selectbox("Volume score", AGGREGATIONS, key=KEY_AGGREGATION,
                                   help="From the slice scores: the highest, the mean of the top k, or the mean.")
        top_k = st.number_input("k (top-k mean)", min_value=1, value=CaseOptions.top_k, key=KEY_TOP_K,
                                disabled=aggregation != "topk_mean")
    return config, scoring_options(plane, aggregation, int(top_k))


def weight_files(weights_dir: Path | None) -> list[str]:
    """Weights and checkpoint files below the launch weights folder, as folder-relative names; links that
    lead out of it are not offered."""
    if weights_dir is None or not weights_dir.is_dir():
        return []
    scope = Scope.of(weights_dir)
    found = [path for path in sorted(weights_dir.rglob("*")) if path.is_file() and scope.contains(path)
             and path.name.lower().endswith(WEIGHT_SUFFIXES) and not path.name.startswith(".")]
    return [path.relative_to(weights_dir).as_posix() for path in found[:MAX_WEIGHT_FILES]]


def _offered_path(weights_dir: Path | None, choice: str, offered: list[str]) -> str:
    """A built-in source as is; an offered file as its real path inside the weights folder."""
    if choice not in offered or weights_dir is None:
        return choice
    return str(Scope.of(weights_dir).confine(weights_dir / choice, "weights file"))


def run_button(session: ViewerSession, config: DetectorConfig, options: CaseOptions, launch: LaunchOptions) -> None:
    """Score the open case with `config` and `options`, or show the cached result of an earlier identical run."""
    if session.scan is None or session.case_key is None:
        return
    key = result_key(session.case_key, config, options)
    cached = key in session.results
    if not st.button("Show earlier result" if cached else "Run inference", key=KEY_RUN, type="primary",
                     width="stretch"):
        return
    if cached:
        session.shown_result[session.case_key] = key
        return
    bar = st.progress(0.0, text="loading the model")
    try:
        predictor = cached_predictor(config)
        result = run_inference(predictor, session.scan, session.workdir / "results", key, options,
                               lambda fraction, text: bar.progress(min(fraction, 1.0), text=text))
    except UserInputError as error:
        bar.empty()
        folders = Scope.of(launch.weights_dir, session.workdir, launch.data_root, launch.case)
        st.error(plain(f"Inference failed: {folders.redact(str(error))}"), icon=None)
        return
    session.add_result(session.case_key, key, result)
