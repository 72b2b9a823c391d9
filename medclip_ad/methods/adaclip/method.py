"""AdaCLIP as the registry sees it: hybrid prompts in both encoders, its own vision encoder and feature layers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medclip_ad.errors import UserInputError
from medclip_ad.methods.adaclip.recipe import FINAL_CHECKPOINT, AdaCLIPTrainingConfig
from medclip_ad.methods.method import Method, MethodTrainer

if TYPE_CHECKING:
    from medclip_ad.config import DetectorConfig
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.methods.adaclip.detector import AdaCLIP
    from medclip_ad.methods.adaclip.training import AdaCLIPTraining
    from medclip_ad.methods.checkpoint import MethodCheckpoint
    from medclip_ad.modeling.clip_backbone import ClipBackbone

METHOD = "adaclip"
# The reference builds CLIP from open_clip's config, which has no QuickGELU; its weights were trained on that.
REFERENCE_ACTIVATION = "gelu"


def build(config: DetectorConfig, backbone: ClipBackbone) -> tuple[AdaCLIP, MethodCheckpoint]:
    """The detector with the weights, feature layers and object word of `config.prompts` (no DPAM)."""
    from medclip_ad.methods.adaclip.checkpoint import load_adaclip
    from medclip_ad.modeling.text_encoder import TextEncoder

    if not config.prompts:
        raise UserInputError("--prompts: the adaclip method needs its trained weights (train them with "
                             "`medclip-ad train --method adaclip --manifest ...`, or import the reference's)")
    return load_adaclip(config.prompts, backbone, TextEncoder(backbone.model), config.image_size)


def start(detector: DetectorConfig, manifests: list[Manifest], recipe: AdaCLIPTrainingConfig) -> AdaCLIPTraining:
    from medclip_ad.methods.adaclip.training import AdaCLIPTraining

    return AdaCLIPTraining(detector, manifests, recipe)


def import_reference(source: Path, out: Path, provenance: dict) -> MethodCheckpoint:
    from medclip_ad.methods.adaclip.checkpoint import import_reference

    return import_reference(source, out, provenance)


ADACLIP = Method(
    name=METHOD, summary="hybrid prompts (--prompts: its adaclip.safetensors, or the reference's weights)",
    build=build, layers_from_checkpoint=True, import_reference=import_reference,
    activation=(REFERENCE_ACTIVATION, "the adaclip reference's model (GELU)"),
    trainer=MethodTrainer(recipe=AdaCLIPTrainingConfig, start=start, final_checkpoint=FINAL_CHECKPOINT,
                          needs_images=True, validation_metric="pixel_f1_max",
                          option_fields=(("layers", "feature_layers"),)))
