"""Build a detector network from a `DetectorConfig`: one builder per method, looked up by name.

Every method's network returns the same `DetectorOutput`, so the predictor never asks which it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from medclip_ad.config import METHODS, DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.methods.adaclip.checkpoint import load_adaclip
from medclip_ad.methods.adaclip.detector import AdaCLIP
from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
from medclip_ad.methods.anomalyclip.prompt_learner import ObjectAgnosticPromptLearner
from medclip_ad.methods.checkpoint import (
    PromptCheckpoint,
    load_into_learner,
    load_method_checkpoint,
    load_prompt_checkpoint,
    recorded_activation,
    recorded_geometry,
)
from medclip_ad.methods.ensemble.prompt_ensemble import PromptEnsemble
from medclip_ad.methods.rwda.head import RandomWordDetector, RandomWordHead
from medclip_ad.modeling.clip_backbone import ClipBackbone, load_clip
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.text_encoder import TextEncoder


@dataclass
class BuiltDetector:
    """The network plus what it was built from (for provenance)."""

    model: AnomalyCLIP | RandomWordDetector | AdaCLIP
    backbone: ClipBackbone
    prompts: PromptCheckpoint | None


# A method's own activation where --activation is auto and its checkpoint records none; the others take
# the weights' own (QuickGELU for OpenAI's). The reference AdaCLIP builds CLIP from open_clip's config,
# which has no QuickGELU, and its released weights were trained on that GELU model.
METHOD_ACTIVATIONS: dict[str, tuple[str, str]] = {"adaclip": ("gelu", "the adaclip reference's model (GELU)")}


def backbone_activation(config: DetectorConfig) -> tuple[str, str]:
    """The activation the configured detector needs and why: given, recorded in its checkpoint, its method's
    own, or "auto" (the weights' own, decided by `load_clip`)."""
    recorded = recorded_activation(config.prompts) if config.prompts else None
    if config.activation != "auto":
        if recorded and recorded != config.activation:
            raise UserInputError(f"--activation {config.activation}: {config.prompts} was trained with {recorded}")
        return config.activation, "--activation"
    if recorded:
        return recorded, f"recorded in {config.prompts}"
    return METHOD_ACTIVATIONS.get(config.method, ("auto", ""))


def load_backbone(config: DetectorConfig) -> ClipBackbone:
    """The configured CLIP weights, built with the activation the configured method needs."""
    return load_clip(config.clip_weights, *backbone_activation(config))


def build_detector(config: DetectorConfig, backbone: ClipBackbone | None = None) -> BuiltDetector:
    """Load the backbone (unless given) and build the configured method on it, on the CPU.

    A given backbone with another activation than the method needs is rebuilt from the same weights.
    """
    if config.method not in METHODS:
        raise UserInputError(f"--method {config.method}: unknown method (choose from {', '.join(METHODS)})")
    check_recorded_geometry(config)
    activation, reason = backbone_activation(config)
    if backbone is None or activation not in ("auto", backbone.activation):
        backbone = load_clip(config.clip_weights if backbone is None else backbone.source, activation, reason)
        _check_finite(backbone, config.clip_weights)
    text_encoder = TextEncoder(backbone.model)
    if config.method == "adaclip":  # its own vision encoder: no DPAM, the checkpoint's feature layers
        model, prompts = _adaclip(config, backbone, text_encoder)
        return BuiltDetector(model, backbone, prompts)
    try:
        vision_encoder = DPAMVisionEncoder(backbone.model, config.image_size, config.layers)
    except ValueError as error:
        raise UserInputError(f"--layers/--image-size: {error}") from error
    model, prompts = _DETECTOR_BUILDERS[config.method](config, text_encoder, vision_encoder)
    return BuiltDetector(model, backbone, prompts)


def _check_finite(backbone: ClipBackbone, weights: str) -> None:
    """NaN or infinite weights would only show as NaN scores after inference; refuse them at loading."""
    for name, parameter in backbone.model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise UserInputError(f"{weights}: CLIP weights file holds NaN or infinite values ({name})")


def check_recorded_geometry(config: DetectorConfig) -> None:
    """Refuse layers or an image size other than those the checkpoint was trained with: its prompts (or
    weights) only mean something there. The command line takes both from the checkpoint unless given."""
    if not config.prompts or config.method == "ensemble":
        return
    layers, image_size = recorded_geometry(config.prompts)
    if layers and config.method != "adaclip" and layers != tuple(config.layers):
        raise UserInputError(f"{config.prompts}: trained with --layers {' '.join(map(str, layers))}, not "
                             f"{' '.join(map(str, config.layers))}; leave --layers out to use the checkpoint's")
    if image_size and image_size != config.image_size:
        raise UserInputError(f"{config.prompts}: trained with --image-size {image_size}, not {config.image_size}; "
                             f"leave --image-size out to use the checkpoint's")


def new_prompt_learner(text_encoder: TextEncoder, like: PromptCheckpoint | None = None) -> ObjectAgnosticPromptLearner:
    """A prompt learner with the published shape, or with the shape of an existing checkpoint."""
    if like is None:
        return ObjectAgnosticPromptLearner(text_encoder)
    return ObjectAgnosticPromptLearner(text_encoder, n_ctx=like.n_ctx, depth=like.depth,
                                       deep_length=like.deep_length or 1)


def _learned_prompts(config: DetectorConfig, text_encoder: TextEncoder, vision_encoder: DPAMVisionEncoder):
    if not config.prompts:
        raise UserInputError("--prompts: the anomalyclip method needs a prompt checkpoint (train one with "
                             "`medclip-ad train`, import one with `medclip-ad import-checkpoint`, or use "
                             "--method ensemble, which needs none)")
    checkpoint = load_prompt_checkpoint(config.prompts)
    if checkpoint.text_width != text_encoder.width:
        raise UserInputError(f"{config.prompts}: prompts have text width {checkpoint.text_width} but the backbone "
                             f"{config.clip_weights} has text width {text_encoder.width}: they were trained for "
                             f"another backbone")
    blocks = len(text_encoder.blocks)
    if checkpoint.depth > blocks:
        raise UserInputError(f"{config.prompts}: {checkpoint.depth - 1} deep prompts, but the backbone "
                             f"{config.clip_weights} has {blocks} text blocks (at most {blocks - 1} deep prompts)")
    learner = new_prompt_learner(text_encoder, like=checkpoint)
    load_into_learner(checkpoint, learner)
    return AnomalyCLIP(text_encoder, vision_encoder, learner), checkpoint


def _prompt_ensemble(config: DetectorConfig, text_encoder: TextEncoder, vision_encoder: DPAMVisionEncoder):
    return AnomalyCLIP(text_encoder, vision_encoder, PromptEnsemble(text_encoder)), None


def _random_word_head(config: DetectorConfig, text_encoder: TextEncoder, vision_encoder: DPAMVisionEncoder):
    if not config.prompts:
        raise UserInputError("--prompts: the rwda method needs its trained head (train one with "
                             "`medclip-ad train --method rwda`, which needs no images)")
    checkpoint = load_method_checkpoint(config.prompts, "rwda")
    try:
        head = RandomWordHead.from_tensors(checkpoint.tensors)
    except (KeyError, RuntimeError) as error:
        raise UserInputError(f"{config.prompts}: not a usable rwda head ({error})") from error
    embed_dim = vision_encoder.projection.shape[1]
    if head.embed_dim != embed_dim:
        raise UserInputError(f"{config.prompts}: the head takes {head.embed_dim}-dimensional embeddings but the "
                             f"backbone {config.clip_weights} has {embed_dim}: it was trained for another backbone")
    return RandomWordDetector(vision_encoder, head), checkpoint


# Each builder returns the method's network and the checkpoint it loaded (None for training-free methods).
_DETECTOR_BUILDERS: dict[str, Callable] = {"anomalyclip": _learned_prompts, "ensemble": _prompt_ensemble,
                                           "rwda": _random_word_head}


def _adaclip(config: DetectorConfig, backbone: ClipBackbone, text_encoder: TextEncoder):
    if not config.prompts:
        raise UserInputError("--prompts: the adaclip method needs its trained weights (train them with "
                             "`medclip-ad train --method adaclip --manifest ...`)")
    return load_adaclip(config.prompts, backbone, text_encoder, config.image_size)
