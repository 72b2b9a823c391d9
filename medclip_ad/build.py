"""Build a detector network from a `DetectorConfig`: one builder per method, looked up by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medclip_ad.checkpoint import PromptCheckpoint, load_into_learner, load_prompt_checkpoint
from medclip_ad.config import METHODS, DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.modeling.anomaly_clip import AnomalyCLIP
from medclip_ad.modeling.clip_backbone import ClipBackbone, load_clip
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.prompt_ensemble import PromptEnsemble
from medclip_ad.modeling.prompt_learner import ObjectAgnosticPromptLearner
from medclip_ad.modeling.text_encoder import TextEncoder


@dataclass
class BuiltDetector:
    """The network plus what it was built from (for provenance)."""

    model: AnomalyCLIP
    backbone: ClipBackbone
    prompts: PromptCheckpoint | None


def build_detector(config: DetectorConfig, backbone: ClipBackbone | None = None) -> BuiltDetector:
    """Load the backbone (unless given) and build the configured method on it, on the CPU."""
    if config.method not in METHODS:
        raise UserInputError(f"--method {config.method}: unknown method (choose from {', '.join(METHODS)})")
    backbone = backbone or load_clip(config.clip_weights, config.quick_gelu)
    text_encoder = TextEncoder(backbone.model)
    try:
        vision_encoder = DPAMVisionEncoder(backbone.model, config.image_size, config.layers)
    except ValueError as error:
        raise UserInputError(f"--layers/--image-size: {error}") from error
    text_source, prompts = _TEXT_SOURCE_BUILDERS[config.method](config, text_encoder)
    return BuiltDetector(AnomalyCLIP(text_encoder, vision_encoder, text_source), backbone, prompts)


def new_prompt_learner(text_encoder: TextEncoder, like: PromptCheckpoint | None = None) -> ObjectAgnosticPromptLearner:
    """A prompt learner with the published shape, or with the shape of an existing checkpoint."""
    if like is None:
        return ObjectAgnosticPromptLearner(text_encoder)
    return ObjectAgnosticPromptLearner(text_encoder, n_ctx=like.n_ctx, depth=like.depth,
                                       deep_length=like.deep_length or 1)


def _learned_prompts(config: DetectorConfig, text_encoder: TextEncoder):
    if not config.prompts:
        raise UserInputError("--prompts: the anomalyclip method needs a prompt checkpoint (train one with "
                             "`medclip-ad train`, import one with `medclip-ad import-checkpoint`, or use "
                             "--method ensemble, which needs none)")
    checkpoint = load_prompt_checkpoint(config.prompts)
    if checkpoint.text_width != text_encoder.width:
        raise UserInputError(f"{config.prompts}: prompts have text width {checkpoint.text_width} but the backbone "
                             f"{config.clip_weights} has text width {text_encoder.width}: they were trained for "
                             f"another backbone")
    learner = new_prompt_learner(text_encoder, like=checkpoint)
    load_into_learner(checkpoint, learner)
    return learner, checkpoint


def _prompt_ensemble(config: DetectorConfig, text_encoder: TextEncoder):
    return PromptEnsemble(text_encoder), None


_TEXT_SOURCE_BUILDERS: dict[str, Callable] = {"anomalyclip": _learned_prompts, "ensemble": _prompt_ensemble}
