"""AdaCLIP checkpoints: the learned weights in this project's safetensors format, method "adaclip".

The metadata carries what the weights only mean together with: backbone, feature layers, image size
and object word. Loading checks the backbone's widths, so prompts trained for another CLIP fail with
a clear message instead of a shape error deep inside a forward pass.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medclip_ad.errors import UserInputError
from medclip_ad.config import ADACLIP_LAYERS, ADACLIP_OBJECT_WORD
from medclip_ad.methods.adaclip.detector import AdaCLIP, AdaCLIPWeights
from medclip_ad.methods.checkpoint import (
    PromptCheckpoint,
    load_method_checkpoint,
    optimizer_tensors,
    save_prompt_checkpoint,
)
from medclip_ad.modeling.clip_backbone import ClipBackbone
from medclip_ad.modeling.text_encoder import TextEncoder

METHOD = "adaclip"


def save_adaclip_checkpoint(path: Path, model: AdaCLIP, metadata: dict[str, object],
                            optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write the model's learned weights with its layers and object word added to `metadata`.

    Training passes its `optimizer`, whose moments make the file resumable.
    """
    tensors = {name: value.detach().float().cpu() for name, value in model.weights.state_dict().items()}
    if optimizer is not None:
        tensors.update(optimizer_tensors(model.weights, optimizer))
    save_prompt_checkpoint(path, tensors, {**metadata, "method": METHOD, "feature_layers": list(model.layers),
                                           "object_word": model.text_encoder.object_word})


def load_adaclip(path: str | Path, backbone: ClipBackbone, text_encoder: TextEncoder,
                 image_size: int) -> tuple[AdaCLIP, PromptCheckpoint]:
    """An AdaCLIP detector on `backbone` with a checkpoint's weights, or a `UserInputError` saying why not."""
    checkpoint = load_method_checkpoint(path, METHOD)
    try:
        weights = AdaCLIPWeights.from_tensors(checkpoint.tensors)
    except (KeyError, RuntimeError, ValueError) as error:
        raise UserInputError(f"{path}: not a usable adaclip checkpoint ({error})") from error
    text_width = weights.text_prompter.static.shape[-1]
    vision_width = weights.visual_prompter.static.shape[-1]
    visual = backbone.model.visual
    if (text_width, vision_width) != (text_encoder.width, visual.conv1.out_channels) or \
            weights.global_projection.in_features != visual.proj.shape[1]:
        raise UserInputError(f"{path}: trained for a backbone with text width {text_width} and vision width "
                             f"{vision_width}, but {backbone.source} has {text_encoder.width} and "
                             f"{visual.conv1.out_channels}")
    layers = tuple(checkpoint.metadata.get("feature_layers", ADACLIP_LAYERS))
    object_word = str(checkpoint.metadata.get("object_word", ADACLIP_OBJECT_WORD))
    try:
        model = AdaCLIP(text_encoder, backbone.model, image_size, weights, layers, object_word)
    except ValueError as error:
        raise UserInputError(f"{path} at --image-size {image_size}: {error}") from error
    return model, checkpoint

