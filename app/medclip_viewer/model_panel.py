"""Sidebar "Model": which detector scores the open case, and the button that runs it with a progress bar.

Random weights are allowed (they show the workflow on machines without CLIP weights) but the choice is
flagged in red before anything runs, as every result made with them is flagged after.
"""

from __future__ import annotations

import streamlit as st
from medclip_ad.config import DetectorConfig
from medclip_ad.constants import IMAGE_SIZE
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import CaseOptions
from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING
from medclip_ad.inference.volume import AGGREGATIONS

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

DEFAULT_CLIP_WEIGHTS = DetectorConfig().clip_weights
AUTO_METHOD_LABEL = f"{METHOD_AUTO} (the checkpoint's method, else ensemble)"
# ViT patches are 14 px: sizes are offered in whole patches.
PATCH_PX = 14


def model_panel() -> tuple[DetectorConfig, CaseOptions]:
    """The detector settings as a config (validated when the model loads, not while typing), and how
    volumes are scored."""
    st.header("Model")
    weights = st.text_input("CLIP weights", value=DEFAULT_CLIP_WEIGHTS, key=KEY_CLIP_WEIGHTS,
                            help="openai (downloaded once), a local checkpoint path, or random:tiny (test only)")
    prompts = st.text_input("Prompt checkpoint", key=KEY_PROMPTS, placeholder="optional .safetensors or .pth",
                            help="anomalyclip prompts (.safetensors or the reference .pth), an rwda head or adaclip "
                                 "weights; without one the ensemble method runs.")
    method = st.selectbox("Method", METHOD_CHOICES, key=KEY_METHOD,
                          format_func=lambda name: AUTO_METHOD_LABEL if name == METHOD_AUTO else name)
    device = st.selectbox("Device", DEVICES, key=KEY_DEVICE)
    image_size = st.number_input("Image size (px)", min_value=PATCH_PX * 8, value=IMAGE_SIZE, step=PATCH_PX,
                                 key=KEY_IMAGE_SIZE, help=f"{IMAGE_SIZE} is the published setting")
    config = detector_config(weights, prompts, method, device, int(image_size))
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


def run_button(session: ViewerSession, config: DetectorConfig, options: CaseOptions) -> None:
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
        st.error(f"Inference failed: {error}")
        return
    session.add_result(session.case_key, key, result)
