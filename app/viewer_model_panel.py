"""Sidebar "Model": which detector scores the open case, and the button that runs it with a progress bar.

Random weights are allowed (they show the workflow on machines without CLIP weights) but the choice is
flagged in red before anything runs, as every result made with them is flagged after.
"""

from __future__ import annotations

import streamlit as st

from medclip_ad.config import DetectorConfig
from medclip_ad.constants import IMAGE_SIZE
from medclip_ad.errors import UserInputError
from medclip_ad.predictor import RANDOM_WEIGHTS_WARNING
from viewer_model import (DEVICES, METHOD_AUTO, METHOD_CHOICES, cached_predictor, detector_config, result_key,
                          run_inference, uses_random_weights)
from viewer_state import (KEY_CLIP_WEIGHTS, KEY_DEVICE, KEY_IMAGE_SIZE, KEY_METHOD, KEY_PROMPTS, KEY_RUN,
                          ViewerSession)

DEFAULT_CLIP_WEIGHTS = DetectorConfig().clip_weights
AUTO_METHOD_LABEL = f"{METHOD_AUTO} (anomalyclip with prompts, else ensemble)"
# ViT patches are 14 px: sizes are offered in whole patches.
PATCH_PX = 14


def model_panel() -> DetectorConfig:
    """The detector settings as a config (validated when the model loads, not while typing)."""
    st.header("Model")
    weights = st.text_input("CLIP weights", value=DEFAULT_CLIP_WEIGHTS, key=KEY_CLIP_WEIGHTS,
                            help="openai (downloaded once), a local checkpoint path, or random:tiny (test only)")
    prompts = st.text_input("Prompt checkpoint", key=KEY_PROMPTS, placeholder="optional .safetensors or .pth",
                            help="Learned prompts for anomalyclip; without them the ensemble method runs.")
    method = st.selectbox("Method", METHOD_CHOICES, key=KEY_METHOD,
                          format_func=lambda name: AUTO_METHOD_LABEL if name == METHOD_AUTO else name)
    device = st.selectbox("Device", DEVICES, key=KEY_DEVICE)
    image_size = st.number_input("Image size (px)", min_value=PATCH_PX * 8, value=IMAGE_SIZE, step=PATCH_PX,
                                 key=KEY_IMAGE_SIZE, help=f"{IMAGE_SIZE} is the published setting")
    config = detector_config(weights, prompts, method, device, int(image_size))
    if uses_random_weights(config):
        st.error(RANDOM_WEIGHTS_WARNING)
    return config


def run_button(session: ViewerSession, config: DetectorConfig) -> None:
    """Score the open case with `config`, or show the cached result of an earlier identical run."""
    if session.scan is None or session.case_key is None:
        return
    key = result_key(session.case_key, config)
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
        result = run_inference(predictor, session.scan, session.workdir / "results", key,
                               lambda fraction, text: bar.progress(min(fraction, 1.0), text=text))
    except UserInputError as error:
        bar.empty()
        st.error(f"Inference failed: {error}")
        return
    session.add_result(session.case_key, key, result)
