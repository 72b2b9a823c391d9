"""rwda as the registry sees it: a head trained on random-word text, applied to DPAM image tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medclip_ad.errors import UserInputError
from medclip_ad.methods.method import Method, MethodTrainer
from medclip_ad.methods.rwda.recipe import FINAL_CHECKPOINT, RandomWordTrainingConfig

if TYPE_CHECKING:
    from medclip_ad.config import DetectorConfig
    from medclip_ad.methods.checkpoint import MethodCheckpoint
    from medclip_ad.methods.rwda.head import RandomWordDetector
    from medclip_ad.methods.rwda.training import HeadTraining
    from medclip_ad.modeling.clip_backbone import ClipBackbone

METHOD = "rwda"


def build(config: DetectorConfig, backbone: ClipBackbone) -> tuple[RandomWordDetector, MethodCheckpoint]:
    """The detector with the trained head of `config.prompts`, checked against the backbone's embedding width."""
    from medclip_ad.methods.checkpoint import load_method_checkpoint
    from medclip_ad.methods.rwda.head import RandomWordDetector, RandomWordHead
    from medclip_ad.modeling.dpam import build_dpam_encoder

    if not config.prompts:
        raise UserInputError("--prompts: the rwda method needs its trained head (train one with "
                             "`medclip-ad train --method rwda`, which needs no images)")
    vision_encoder = build_dpam_encoder(backbone, config.image_size, config.layers)
    checkpoint = load_method_checkpoint(config.prompts, METHOD)
    try:
        head = RandomWordHead.from_tensors(checkpoint.tensors)
    except (KeyError, RuntimeError) as error:
        raise UserInputError(f"{config.prompts}: not a usable rwda head ({error})") from error
    embed_dim = vision_encoder.projection.shape[1]
    if head.embed_dim != embed_dim:
        raise UserInputError(f"{config.prompts}: the head takes {head.embed_dim}-dimensional embeddings but the "
                             f"backbone {config.clip_weights} has {embed_dim}: it was trained for another backbone")
    return RandomWordDetector(vision_encoder, head), checkpoint


def start(detector: DetectorConfig, manifests: list, recipe: RandomWordTrainingConfig) -> HeadTraining:
    """The text-only training; it takes no manifests (the registry refuses them before this)."""
    from medclip_ad.methods.rwda.training import HeadTraining

    return HeadTraining(detector, recipe)


RWDA = Method(
    name=METHOD, summary="a head trained on text alone (--prompts: its rwda_head.safetensors)", build=build,
    trainer=MethodTrainer(recipe=RandomWordTrainingConfig, start=start, final_checkpoint=FINAL_CHECKPOINT,
                          needs_images=False, validation_metric="image_auroc",
                          option_fields=(("prompts_per_class", "prompts.prompts_per_class"),)))
