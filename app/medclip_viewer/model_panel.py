"""Sidebar "Model": which detector scores the open case, and the button that runs it in the background
with a progress bar (the page stays usable; the result opens when it is ready).

The section is built only while it is open: the browser draws every control on the thread that also
starts the image viewer, and a reader of scored cases rarely needs it. It opens by itself when a case
without a result opens. Streamlit forgets the value of a widget that is not drawn, so the settings are
kept across runs in which the section is closed.

CLIP weights and checkpoints are picked from a list: the built-in sources and the files of the
`--weights-dir` chosen at launch. A visitor never types a server path, so no file the viewer did not
offer (an uploaded TorchScript payload, say) can be loaded as a model.

Random weights are allowed (they show the workflow on machines without CLIP weights) but the choice is
flagged in red before anything runs, as every result made with them is flagged after.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from medclip_ad.config import AGGREGATIONS, CaseOptions, DetectorConfig
from medclip_ad.constants import DEFAULT_LAYERS, IMAGE_SIZE
from medclip_ad.errors import UserInputError
from medclip_ad.methods.registry import METHOD_NAMES
from medclip_ad.limits import MAX_WEIGHT_FILES
from medclip_ad.random_weights import RANDOM_WEIGHTS_WARNING

from medclip_viewer.cases import CaseResult
from medclip_viewer.confinement import Scope
from medclip_viewer.display_text import plain
from medclip_viewer.launch import LaunchOptions
from medclip_viewer.model import (
    DEVICES,
    METHOD_AUTO,
    METHOD_CHOICES,
    SCORED_PLANES,
    detector_config,
    parse_layers,
    result_key,
    scoring_options,
    start_inference,
    uses_random_weights,
)
from medclip_viewer.state import (
    KEY_AGGREGATION,
    KEY_CLIP_WEIGHTS,
    KEY_DEVICE,
    KEY_IMAGE_SIZE,
    KEY_LAYERS,
    KEY_METHOD,
    KEY_MODEL_SECTION,
    KEY_PROMPTS,
    KEY_RUN,
    KEY_SCORED_PLANE,
    KEY_TOP_K,
    ViewerSession,
    keep_hidden_widget_values,
)

BUILT_IN_WEIGHTS: tuple[str, ...] = (DetectorConfig().clip_weights, "random:tiny")
NO_CHECKPOINT = "(none)"
WEIGHT_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".safetensors")
# ViT patches are 14 px: sizes are offered in whole patches.
PATCH_PX = 14
# How often a running inference job's progress is redrawn (seconds).
PROGRESS_POLL_S = 1.0
_KEY_PREFILLED = "model.prefilled_from"
_KEY_OPENED_FOR = "model.section_opened_for"
# The panel's widgets: their values outlive the runs in which the section is closed.
SETTING_KEYS: tuple[str, ...] = (KEY_CLIP_WEIGHTS, KEY_PROMPTS, KEY_METHOD, KEY_DEVICE, KEY_IMAGE_SIZE, KEY_LAYERS,
                                 KEY_SCORED_PLANE, KEY_AGGREGATION, KEY_TOP_K)


def model_section(session: ViewerSession, launch: LaunchOptions) -> None:
    """The sidebar's Model section: the settings and the run button while it is open, a running job's
    progress either way. Finished jobs are collected first, so the page below shows their results."""
    collect_finished(session)
    keep_hidden_widget_values(SETTING_KEYS)
    _prefill(session.shown(), launch.weights_dir)
    _open_for_a_case_without_result(session)
    section = st.expander("Model", key=KEY_MODEL_SECTION, on_change="rerun")
    if not section.open:
        running = next((key for key, job in session.jobs.items() if job.running), None)
        if running is not None:
            inference_progress(session, running)
        return
    with section:
        config, scoring = model_panel(launch.weights_dir, weight_files(launch.weights_dir))
        run_button(session, config, scoring, launch)


def _open_for_a_case_without_result(session: ViewerSession) -> None:
    """A case that opens without a result needs the model to be chosen: the section opens for it (once,
    so the reader can still close it)."""
    if _KEY_OPENED_FOR in st.session_state and st.session_state[_KEY_OPENED_FOR] == session.case_key:
        return
    st.session_state[_KEY_OPENED_FOR] = session.case_key
    if session.shown() is None:
        st.session_state[KEY_MODEL_SECTION] = True


def model_panel(weights_dir: Path | None, offered: list[str]) -> tuple[DetectorConfig, CaseOptions]:
    """The detector settings as a config (validated when the model loads, not while typing), and how
    volumes are scored; `offered`: the weights folder's files."""
    for line in st.session_state.get(f"{_KEY_PREFILLED}.missing", []):
        st.caption(plain(f"The open result's model: {line}."))
    weights = st.selectbox("CLIP weights", [*BUILT_IN_WEIGHTS, *offered], key=KEY_CLIP_WEIGHTS,
                           help="openai (downloaded once), random:tiny (test only), or a file of the weights "
                                "folder the viewer was started with (--weights-dir)")
    prompts = st.selectbox("Prompt checkpoint", [NO_CHECKPOINT, *offered], key=KEY_PROMPTS,
                           help="anomalyclip prompts (.safetensors or the reference .pth), an rwda head or adaclip "
                                "weights from the weights folder; without one the ensemble method runs.")
    method = st.selectbox("Method", METHOD_CHOICES, key=KEY_METHOD,
                          help=f"{METHOD_AUTO}: the checkpoint's method, else ensemble")
    device = st.selectbox("Device", DEVICES, key=KEY_DEVICE)
    st.session_state.setdefault(KEY_IMAGE_SIZE, IMAGE_SIZE)
    image_size = st.number_input("Image size (px)", min_value=PATCH_PX * 8, step=PATCH_PX, key=KEY_IMAGE_SIZE,
                                 help=f"{IMAGE_SIZE} is the published setting")
    st.session_state.setdefault(KEY_LAYERS, _layers_text(DEFAULT_LAYERS))
    layers_text = st.text_input("Layers", key=KEY_LAYERS,
                                help=f"CLIP blocks whose maps are summed ({_layers_text(DEFAULT_LAYERS)} is the "
                                     "published setting; a checkpoint's own layers where it records them)")
    try:
        layers = parse_layers(layers_text)
    except UserInputError as error:
        st.error(plain(str(error)), icon=None)
        layers = DEFAULT_LAYERS
    config = detector_config(_offered_path(weights_dir, weights, offered),
                             _offered_path(weights_dir, prompts, offered) if prompts != NO_CHECKPOINT else "",
                             method, device, int(image_size), layers)
    if uses_random_weights(config):
        st.error(RANDOM_WEIGHTS_WARNING)
    with st.expander("Volume scoring"):
        plane = st.selectbox("Score slices along", SCORED_PLANES, key=KEY_SCORED_PLANE,
                             help="The acquisition plane is how the scanner took the slices; the map covers the "
                                  "whole volume whichever plane is scored.")
        aggregation = st.selectbox("Volume score", AGGREGATIONS, key=KEY_AGGREGATION,
                                   help="From the slice scores: the highest, the mean of the top k, or the mean.")
        st.session_state.setdefault(KEY_TOP_K, CaseOptions.top_k)
        top_k = st.number_input("k (top-k mean)", min_value=1, key=KEY_TOP_K, disabled=aggregation != "topk_mean")
    return config, scoring_options(plane, aggregation, int(top_k))


def _layers_text(layers) -> str:
    return " ".join(str(int(layer)) for layer in layers)


def provenance_choices(model: dict, weights_dir: Path | None,
                       offered: list[str]) -> tuple[dict[str, object], list[str]]:
    """The panel's settings that reproduce a result's `model` provenance (widget key to value), and what of it
    this viewer cannot offer (weights or a checkpoint outside the weights folder), as plain lines."""
    choices: dict[str, object] = {}
    missing: list[str] = []
    if model.get("method") in METHOD_NAMES:
        choices[KEY_METHOD] = model["method"]
    for key, recorded, none_choice, what in ((KEY_CLIP_WEIGHTS, model.get("clip_weights"), None, "CLIP weights"),
                                             (KEY_PROMPTS, model.get("prompts"), NO_CHECKPOINT, "checkpoint")):
        if recorded is None or recorded == "":
            if none_choice is not None:
                choices[key] = none_choice
            continue
        choice = _offered_choice(str(recorded), weights_dir, offered)
        if choice is None:
            missing.append(f"its {what} ({Path(str(recorded)).name}) are not offered here")
        else:
            choices[key] = choice
    size = model.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= PATCH_PX * 8:
        choices[KEY_IMAGE_SIZE] = size
    layers = model.get("layers")
    if isinstance(layers, list) and layers and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                   for v in layers):
        choices[KEY_LAYERS] = _layers_text(layers)
    return choices, missing


def _offered_choice(recorded: str, weights_dir: Path | None, offered: list[str]) -> str | None:
    """The list entry naming a recorded weights source: a built-in one as is, a file by its real path."""
    if recorded in BUILT_IN_WEIGHTS:
        return recorded
    if weights_dir is None:
        return None
    real = Path(recorded).resolve()
    return next((name for name in offered if (weights_dir / name).resolve() == real), None)


def _prefill(shown: CaseResult | None, weights_dir: Path | None) -> None:
    """When another result opens, the panel is set to the model that made it (an audit finding: re-running
    a result must not silently use other settings), whether or not the section is open."""
    if shown is None:
        return
    identity = str(shown.folder)
    if st.session_state.get(_KEY_PREFILLED) != identity:
        st.session_state[_KEY_PREFILLED] = identity
        choices, missing = provenance_choices(shown.document.get("model") or {}, weights_dir,
                                              weight_files(weights_dir))
        st.session_state.update(choices)
        st.session_state[f"{_KEY_PREFILLED}.missing"] = missing


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
    """Score the open case with `config` and `options` in the background, or show the cached result of an
    earlier identical run; while a job runs, its progress."""
    if session.scan is None or session.case_key is None:
        return
    key = result_key(session.case_key, config, options)
    error = session.inference_errors.pop(key, None)
    if error is not None:
        folders = Scope.of(launch.weights_dir, session.workdir, launch.data_root, launch.case)
        st.error(plain(f"Inference failed: {folders.redact(error)}"), icon=None)
    job = session.jobs.get(key)
    if job is not None and job.running:
        st.button("Scoring in the background...", key=KEY_RUN, disabled=True, width="stretch")
        inference_progress(session, key)
        return
    cached = key in session.results
    if not st.button("Show earlier result" if cached else "Run inference", key=KEY_RUN, type="primary",
                     width="stretch"):
        return
    if cached:
        session.shown_result[session.case_key] = key
        return
    session.jobs[key] = start_inference(key, session.case_key, config, session.scan, session.workdir / "results",
                                        options)
    inference_progress(session, key)


def collect_finished(session: ViewerSession) -> None:
    """Finished jobs hand over: a result becomes its case's shown one, an error is kept for the panel."""
    for key, job in list(session.jobs.items()):
        if job.running:
            continue
        del session.jobs[key]
        if job.result is not None:
            session.add_result(job.case_key, key, job.result)
        else:
            session.inference_errors[key] = job.error


@st.fragment(run_every=PROGRESS_POLL_S)
def inference_progress(session: ViewerSession, key: str) -> None:
    """The running job's progress, redrawn on its own every PROGRESS_POLL_S; once the job has ended, the
    whole page is drawn again (which opens its result)."""
    job = session.jobs.get(key)
    if job is not None and job.running:
        st.progress(job.fraction, text=job.text)
    else:
        st.rerun(scope="app")
