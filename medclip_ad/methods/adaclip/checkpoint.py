"""AdaCLIP checkpoints: this project's safetensors format (method "adaclip"), and the reference's format.

Our metadata carries what the weights only mean together with: backbone, CLIP activation, feature
layers, image size and object word. The reference (and its released weights) saves a flat state dict
of `clip_model.text_prompter.*`, `clip_model.visual_prompter.*`, the projections and both generators;
it is read with `torch.load(weights_only=True)`, renamed, and given the reference's settings: GELU,
feature layers at every quarter of the vision tower, the object word "object". Loading checks the
backbone's widths, so weights trained for another CLIP fail with a clear message instead of a shape
error deep inside a forward pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from medclip_ad.errors import UserInputError
from medclip_ad.methods.adaclip.detector import AdaCLIP, AdaCLIPWeights
from medclip_ad.methods.adaclip.method import METHOD, REFERENCE_ACTIVATION
from medclip_ad.methods.adaclip.recipe import ADACLIP_LAYERS, ADACLIP_OBJECT_WORD
from medclip_ad.io.file_digest import file_sha256
from medclip_ad.methods.checkpoint import (
    ADACLIP_REFERENCE_PREFIX,
    MethodCheckpoint,
    is_safetensors,
    load_method_checkpoint,
    optimizer_tensors,
    read_reference_file,
    reference_method,
    save_method_checkpoint,
)
from medclip_ad.modeling.clip_backbone import ClipBackbone
from medclip_ad.modeling.text_encoder import TextEncoder

# Reference module -> ours; `{i}` is the same index on both sides.
_REFERENCE_NAMES = {
    "text_prompter.static_prompts.{i}": "text_prompter.static",
    "visual_prompter.static_prompts.{i}": "visual_prompter.static",
    "dynamic_text_prompt_generator.head.{i}": "text_prompter.generators.{i}",
    "dynamic_visual_prompt_generator.head.{i}": "visual_prompter.generators.{i}",
    "patch_token_layer.head.{i}": "patch_projections.{i}",
    "cls_token_layer.head.0": "global_projection",
}


def save_adaclip_checkpoint(path: Path, model: AdaCLIP, metadata: dict[str, object],
                            optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write the model's learned weights with its activation, layers and object word added to `metadata`.

    Training passes its `optimizer`, whose moments make the file resumable.
    """
    tensors = {name: value.detach().float().cpu() for name, value in model.weights.state_dict().items()}
    if optimizer is not None:
        tensors.update(optimizer_tensors(model.weights, optimizer))
    save_method_checkpoint(path, tensors, {**metadata, "method": METHOD, "activation": model.activation,
                                           "feature_layers": list(model.layers),
                                           "object_word": model.text_encoder.object_word})


def reference_feature_layers(depth: int) -> tuple[int, ...]:
    """The reference's feature layers for a vision tower of `depth` blocks: every quarter (6 12 18 24 for ViT-L)."""
    return tuple(depth // 4 * quarter for quarter in range(1, 5))


def read_reference_adaclip(path: Path) -> MethodCheckpoint:
    """A reference AdaCLIP checkpoint as this project's tensors, with the reference's settings as metadata."""
    raw = read_reference_file(path)
    if reference_method(raw) != METHOD:
        raise UserInputError(f"{path}: not an adaclip checkpoint (expected this project's adaclip .safetensors "
                             f"or the reference's flat `{ADACLIP_REFERENCE_PREFIX}*` state dict)")
    statics: dict[str, dict[int, torch.Tensor]] = {}
    tensors: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        module, _, parameter = key.removeprefix(ADACLIP_REFERENCE_PREFIX).rpartition(".")
        target = _our_name(f"{module}.{parameter}" if module.endswith("static_prompts") else module)
        if target is None or not isinstance(value, torch.Tensor):
            raise UserInputError(f"{path}: unexpected entry {key} in a reference adaclip checkpoint")
        if target[0].endswith(".static"):
            statics.setdefault(target[0], {})[target[1]] = value.float()
        else:
            tensors[f"{target[0]}.{parameter}"] = value.float()
    for name, layers in statics.items():
        if sorted(layers) != list(range(len(layers))):
            raise UserInputError(f"{path}: {name} prompts of layers {sorted(layers)}, expected 0..{len(layers) - 1}")
        tensors[name] = torch.stack([layers[index] for index in range(len(layers))])
    return MethodCheckpoint(tensors, {"method": METHOD, "activation": REFERENCE_ACTIVATION,
                                      "object_word": ADACLIP_OBJECT_WORD}, path)


def read_adaclip_checkpoint(path: str | Path) -> MethodCheckpoint:
    """Either format; this project's own must record its activation (earlier files computed another AdaCLIP)."""
    path = Path(path)
    if path.is_file() and not is_safetensors(path):
        return read_reference_adaclip(path)
    checkpoint = load_method_checkpoint(path, METHOD)
    if "activation" not in checkpoint.metadata:
        raise UserInputError(f"{path}: an adaclip checkpoint of an earlier medclip-ad, whose AdaCLIP did not compute "
                             f"what the reference does; retrain it, or import the reference's weights")
    return checkpoint


def load_adaclip(path: str | Path, backbone: ClipBackbone, text_encoder: TextEncoder,
                 image_size: int) -> tuple[AdaCLIP, MethodCheckpoint]:
    """An AdaCLIP detector on `backbone` with a checkpoint's weights, or a `UserInputError` saying why not."""
    checkpoint = read_adaclip_checkpoint(path)
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
    # A reference file records no layers: the reference derives them from the vision tower's depth.
    depth = len(visual.transformer.resblocks)
    layers = tuple(checkpoint.metadata.get("feature_layers", reference_feature_layers(depth)))
    object_word = str(checkpoint.metadata.get("object_word", ADACLIP_OBJECT_WORD))
    try:
        model = AdaCLIP(text_encoder, backbone.model, image_size, weights, layers, object_word)
    except ValueError as error:
        raise UserInputError(f"{path} at --image-size {image_size}: {error}") from error
    return model, checkpoint


def import_reference(source: Path, out: Path, provenance: dict[str, object]) -> MethodCheckpoint:
    """Convert a reference AdaCLIP file to this project's format with `provenance` added; `layers` (None:
    the published ones) must give one feature layer per patch projection the file holds."""
    checkpoint = read_reference_adaclip(source)
    layers = list(provenance.get("layers") or ADACLIP_LAYERS)
    projections = {name.split(".")[1] for name in checkpoint.tensors if name.startswith("patch_projections.")}
    if len(layers) != len(projections):
        raise UserInputError(f"--layers {' '.join(map(str, layers))}: {source} has {len(projections)} "
                             f"patch projections, one per feature layer")
    metadata = {key: value for key, value in provenance.items() if key != "layers"}
    save_method_checkpoint(out, checkpoint.tensors, {
        **checkpoint.metadata, **metadata, "feature_layers": layers, "imported_from": str(source),
        "imported_sha256": file_sha256(source)})
    return checkpoint


def _our_name(reference_module: str) -> tuple[str, int] | None:
    """Our module name and the index `{i}` matched in a reference module name, or None for an unknown module."""
    for pattern, ours in _REFERENCE_NAMES.items():
        match = re.fullmatch(re.escape(pattern).replace(r"\{i\}", r"(\d+)"), reference_module)
        if match:
            index = int(match.group(1)) if match.groups() else 0
            return ours.format(i=index), index
    return None
