"""AnomalyCLIP as the registry sees it: learned object-agnostic prompts on the DPAM encoder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medclip_ad.errors import UserInputError
from medclip_ad.methods.anomalyclip.recipe import FINAL_CHECKPOINT, TrainingConfig
from medclip_ad.methods.method import Method, MethodTrainer

if TYPE_CHECKING:
    from medclip_ad.config import DetectorConfig
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
    from medclip_ad.methods.anomalyclip.training import PromptTraining
    from medclip_ad.methods.checkpoint import MethodCheckpoint
    from medclip_ad.modeling.clip_backbone import ClipBackbone

METHOD = "anomalyclip"


def build(config: DetectorConfig, backbone: ClipBackbone) -> tuple[AnomalyCLIP, MethodCheckpoint]:
    """The detector with the prompts of `config.prompts` (this project's format or the reference `.pth`)."""
    from medclip_ad.methods.anomalyclip.checkpoint import (
        PromptShape,
        load_into_learner,
        load_prompt_checkpoint,
        new_prompt_learner,
    )
    from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
    from medclip_ad.modeling.dpam import build_dpam_encoder
    from medclip_ad.modeling.text_encoder import TextEncoder

    if not config.prompts:
        raise UserInputError("--prompts: the anomalyclip method needs a prompt checkpoint (train one with "
                             "`medclip-ad train`, import one with `medclip-ad import-checkpoint`, or use "
                             "--method ensemble, which needs none)")
    text_encoder = TextEncoder(backbone.model)
    vision_encoder = build_dpam_encoder(backbone, config.image_size, config.layers)
    checkpoint = load_prompt_checkpoint(config.prompts)
    text_width = PromptShape.of(checkpoint).text_width
    if text_width != text_encoder.width:
        raise UserInputError(f"{config.prompts}: prompts have text width {text_width} but the backbone "
                             f"{config.clip_weights} has text width {text_encoder.width}: they were trained for "
                             f"another backbone")
    depth, blocks = PromptShape.of(checkpoint).depth, len(text_encoder.blocks)
    if depth > blocks:
        raise UserInputError(f"{config.prompts}: {depth - 1} deep prompts, but the backbone {config.clip_weights} "
                             f"has {blocks} text blocks (at most {blocks - 1} deep prompts)")
    learner = new_prompt_learner(text_encoder, like=checkpoint)
    load_into_learner(checkpoint, learner)
    return AnomalyCLIP(text_encoder, vision_encoder, learner), checkpoint


def start(detector: DetectorConfig, manifests: list[Manifest], recipe: TrainingConfig) -> PromptTraining:
    from medclip_ad.methods.anomalyclip.training import PromptTraining

    return PromptTraining(detector, manifests, recipe)


def import_reference(source: Path, out: Path, provenance: dict) -> MethodCheckpoint:
    from medclip_ad.methods.anomalyclip.checkpoint import import_reference

    return import_reference(source, out, provenance)


ANOMALYCLIP = Method(
    name=METHOD, summary="learned prompts (needs --prompts)", build=build, import_reference=import_reference,
    trainer=MethodTrainer(recipe=TrainingConfig, start=start, final_checkpoint=FINAL_CHECKPOINT,
                          needs_images=True, validation_metric="pixel_auroc"))
