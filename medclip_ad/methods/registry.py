"""Every method by name, and `build_detector`: a `DetectorConfig` -> that method's detector on a loaded backbone.

The one place that lists the methods; adding one means adding its folder and one line here. Looking a
method up imports nothing heavy; building one loads the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medclip_ad.errors import UserInputError
from medclip_ad.methods import DEFAULT_METHOD
from medclip_ad.methods.adaclip.method import ADACLIP
from medclip_ad.methods.anomalyclip.method import ANOMALYCLIP
from medclip_ad.methods.ensemble.method import ENSEMBLE
from medclip_ad.methods.method import Method, MethodTrainer
from medclip_ad.methods.rwda.method import RWDA

if TYPE_CHECKING:
    from torch import nn

    from medclip_ad.config import DetectorConfig
    from medclip_ad.methods.checkpoint import MethodCheckpoint
    from medclip_ad.modeling.clip_backbone import ClipBackbone

METHODS: dict[str, Method] = {method.name: method for method in (ANOMALYCLIP, ENSEMBLE, RWDA, ADACLIP)}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
TRAINED_METHOD_NAMES: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.trainer)
IMPORTING_METHOD_NAMES: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.import_reference)


@dataclass
class BuiltDetector:
    """The network plus what it was built from (for provenance)."""

    model: nn.Module
    backbone: ClipBackbone
    checkpoint: MethodCheckpoint | None


def get_method(name: str) -> Method:
    """The method called `name`, or one line naming the choices."""
    if name not in METHODS:
        raise UserInputError(f"--method {name}: unknown method (choose from {', '.join(METHODS)})")
    return METHODS[name]


def get_trainer(name: str) -> MethodTrainer:
    """How the method called `name` trains, or one line saying it does not."""
    trainer = get_method(name).trainer
    if trainer is None:
        raise UserInputError(f"--method {name}: needs no training (trained methods: {', '.join(TRAINED_METHOD_NAMES)})")
    return trainer


def checkpoint_method(path: str | Path) -> str:
    """The method a checkpoint was trained for: recorded in this project's format, told by a reference
    file's keys; the default method where neither says."""
    from medclip_ad.methods.checkpoint import recorded_method

    return recorded_method(path) or DEFAULT_METHOD


def backbone_activation(config: DetectorConfig) -> tuple[str, str]:
    """The activation the configured detector needs and why: given, recorded in its checkpoint, its method's
    own, or "auto" (the weights' own, decided by `load_clip`)."""
    from medclip_ad.methods.checkpoint import recorded_activation

    recorded = recorded_activation(config.prompts) if config.prompts else None
    if config.activation != "auto":
        if recorded and recorded != config.activation:
            raise UserInputError(f"--activation {config.activation}: {config.prompts} was trained with {recorded}")
        return config.activation, "--activation"
    if recorded:
        return recorded, f"recorded in {config.prompts}"
    return get_method(config.method).activation or ("auto", "")


def load_backbone(config: DetectorConfig) -> ClipBackbone:
    """The configured CLIP weights, built with the activation the configured method needs."""
    from medclip_ad.modeling.clip_backbone import load_clip

    return load_clip(config.clip_weights, *backbone_activation(config))


def build_detector(config: DetectorConfig, backbone: ClipBackbone | None = None) -> BuiltDetector:
    """Load the backbone (unless given) and build the configured method on it, on the CPU.

    A given backbone with another activation than the method needs is rebuilt from the same weights.
    """
    from medclip_ad.modeling.clip_backbone import load_clip

    method = get_method(config.method)
    check_recorded_geometry(config)
    activation, reason = backbone_activation(config)
    if backbone is None or activation not in ("auto", backbone.activation):
        backbone = load_clip(config.clip_weights if backbone is None else backbone.source, activation, reason)
        _check_finite(backbone, config.clip_weights)
    model, checkpoint = method.build(config, backbone)
    return BuiltDetector(model, backbone, checkpoint)


def check_recorded_geometry(config: DetectorConfig) -> None:
    """Refuse layers or an image size other than those the checkpoint was trained with: its prompts (or
    weights) only mean something there. The command line takes both from the checkpoint unless given."""
    from medclip_ad.methods.checkpoint import recorded_geometry

    method = get_method(config.method)
    if not config.prompts or method.trainer is None:  # training-free methods read no checkpoint
        return
    layers, image_size = recorded_geometry(config.prompts)
    if layers and not method.layers_from_checkpoint and layers != tuple(config.layers):
        raise UserInputError(f"{config.prompts}: trained with --layers {' '.join(map(str, layers))}, not "
                             f"{' '.join(map(str, config.layers))}; leave --layers out to use the checkpoint's")
    if image_size and image_size != config.image_size:
        raise UserInputError(f"{config.prompts}: trained with --image-size {image_size}, not {config.image_size}; "
                             f"leave --image-size out to use the checkpoint's")


def _check_finite(backbone: ClipBackbone, weights: str) -> None:
    """NaN or infinite weights would only show as NaN scores after inference; refuse them at loading."""
    import torch

    for name, parameter in backbone.model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise UserInputError(f"{weights}: CLIP weights file holds NaN or infinite values ({name})")
