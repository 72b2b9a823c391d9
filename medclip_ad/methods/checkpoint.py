"""Method checkpoints: what a trained method learned, in one safetensors format shared by every method.

A method checkpoint is small (43,008 prompt values for AnomalyCLIP on ViT-L, an rwda head, AdaCLIP's
prompters and projections) but only means something together with the backbone, layers and image size
it was trained with, so the format carries that provenance, and the method, in the safetensors
metadata; training checkpoints add the optimiser's moments. What each method stores, and the import of
a reference format, live with the method (`methods/<name>/`). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from medclip_ad import __version__
from medclip_ad.errors import UserInputError
from medclip_ad.io.json_documents import parse_json
from medclip_ad.io.atomic import atomic_write

FORMAT_NAME = "medclip-ad-prompts"
FORMAT_VERSION = 1
# Tensors under this prefix hold optimiser moments for resuming training, not prompts.
OPTIMIZER_PREFIX = "optimizer."
# Every tensor of a reference AdaCLIP checkpoint is named under the prompters' and projections' parent module.
ADACLIP_REFERENCE_PREFIX = "clip_model."


@dataclass
class MethodCheckpoint:
    """A method's learned tensors under its own names, plus provenance (`metadata["method"]` names the method).

    Training checkpoints also carry the optimiser's moments in `optimizer_state`.
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, object] = field(default_factory=dict)
    path: Path | None = None
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)


def save_method_checkpoint(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, object]) -> None:
    """Write a `.safetensors` method checkpoint atomically, with provenance and the package version."""
    full_metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__,
                     **metadata}
    encoded = {key: json.dumps(value) for key, value in full_metadata.items()}
    with atomic_write(Path(path)) as temporary:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary), metadata=encoded)


def read_reference_file(path: Path) -> object:
    """A reference `.pth` file's content, read without code execution (`torch.load(weights_only=True)`)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure: not a usable checkpoint
        raise UserInputError(f"{path}: not a readable prompt checkpoint ({type(error).__name__})") from error


def reference_method(raw: object) -> str | None:
    """The method a reference-format checkpoint belongs to, told by its keys, or None.

    AnomalyCLIP's reference saves `{"prompt_learner": state_dict}`; AdaCLIP's (and its released weights)
    a flat state dict of `clip_model.text_prompter.*`, `clip_model.visual_prompter.*` and the rest.
    """
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("prompt_learner"), dict):
        return "anomalyclip"
    if any(isinstance(key, str) and key.startswith(ADACLIP_REFERENCE_PREFIX) for key in raw):
        return "adaclip"
    return None


def recorded_activation(path: Path | str) -> str | None:
    """The CLIP activation a checkpoint in this project's format was trained with, from its header; else None."""
    path = Path(path)
    if not path.is_file() or not is_safetensors(path):
        return None
    activation = _header_value(path, "activation")
    return str(activation) if activation else None


def _header_value(path: Path, key: str) -> object:
    """One decoded metadata value of a safetensors file, read from its header alone; None if absent or unreadable."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            value = (handle.metadata() or {}).get(key)
    except (SafetensorError, OSError, ValueError):
        return None
    try:
        return _decode(value, path) if value else None
    except UserInputError:
        return None


def load_method_checkpoint(path: Path | str, method: str) -> MethodCheckpoint:
    """Read a checkpoint in this project's format, refusing one recorded for another method."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {method} checkpoint not found")
    if not is_safetensors(path):
        raise UserInputError(f"{path}: not a {method} checkpoint (train one with `medclip-ad train --method {method}`)")
    checkpoint = read_method_checkpoint(path)
    found = checkpoint.metadata.get("method")
    if found != method:
        raise UserInputError(f"{path}: a checkpoint of method {found or 'unknown'}, but --method {method} needs "
                             f"one from `medclip-ad train --method {method}`")
    return checkpoint


def load_module_weights(checkpoint: MethodCheckpoint, module: torch.nn.Module) -> None:
    """Copy a checkpoint's tensors into `module` (its `state_dict` names), or say in one line what does not fit."""
    try:
        module.load_state_dict(checkpoint.tensors)
    except RuntimeError as error:
        raise UserInputError(f"{checkpoint.path}: does not fit this backbone ({str(error).splitlines()[0]})") from error


def optimizer_tensors(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam(W)'s per-parameter moments as checkpoint tensors, so a resumed run continues exactly."""
    tensors = {}
    for name, parameter in module.named_parameters():
        for key, value in optimizer.state.get(parameter, {}).items():
            tensors[f"{OPTIMIZER_PREFIX}{name}.{key}"] = torch.as_tensor(value).detach().float().cpu().reshape(-1)
    return tensors


def restore_optimizer_state(checkpoint: MethodCheckpoint, module: torch.nn.Module,
                            optimizer: torch.optim.Optimizer) -> None:
    """Put the moments `optimizer_tensors` saved back onto `module`'s parameters."""
    for name, parameter in module.named_parameters():
        state = {key.rsplit(".", 1)[1]: value for key, value in checkpoint.optimizer_state.items()
                 if key.rsplit(".", 1)[0] == name}
        if state:
            optimizer.state[parameter] = {
                "step": state["step"].reshape(()),
                "exp_avg": state["exp_avg"].reshape(parameter.shape).to(parameter.device),
                "exp_avg_sq": state["exp_avg_sq"].reshape(parameter.shape).to(parameter.device)}


def recorded_method(path: Path | str) -> str | None:
    """The method a checkpoint in this project's format was trained for, read from its header alone.

    Reference-format files are recognised by their keys. None when the file is missing or unreadable:
    the caller then falls back to its default and the loader reports any problem with the file.
    """
    path = Path(path)
    if not path.is_file():
        return None
    if not is_safetensors(path):
        try:
            return reference_method(read_reference_file(path))
        except UserInputError:
            return None
    method = _header_value(path, "method")
    return str(method) if method else None


def recorded_geometry(path: Path | str) -> tuple[tuple[int, ...] | None, int | None]:
    """The layers and image size a checkpoint in this project's format records, read from its header alone
    (None for what it does not record as such, e.g. a reference file)."""
    path = Path(path)
    if not path.is_file() or not is_safetensors(path):
        return None, None
    layers, image_size = _header_value(path, "layers"), _header_value(path, "image_size")
    valid_layers = isinstance(layers, list) and bool(layers) and all(isinstance(v, int) for v in layers)
    return (tuple(layers) if valid_layers else None,
            image_size if isinstance(image_size, int) and not isinstance(image_size, bool) else None)


# Recipe fields a resumed run may change: more epochs continue a run, workers only change its speed.
RESUMABLE_RECIPE_CHANGES: frozenset[str] = frozenset({"epochs", "workers"})


def check_resume_recipe(checkpoint: MethodCheckpoint, run_provenance: dict[str, object]) -> None:
    """Refuse to resume a run with another recipe than its checkpoint's (weights, layers, image size,
    data, optimisation): the result would be a mix that neither recipe gives, recorded as one of them."""
    where = checkpoint.path or "checkpoint"
    for key, ours in run_provenance.items():
        theirs = checkpoint.metadata.get(key)
        if key == "epochs" or theirs is None:
            continue
        if key == "recipe" and isinstance(theirs, dict) and isinstance(ours, dict):
            for field_name in sorted(set(theirs) | set(ours)):
                if field_name not in RESUMABLE_RECIPE_CHANGES and theirs.get(field_name) != ours.get(field_name):
                    raise UserInputError(f"{where}: trained with {field_name} {theirs.get(field_name)}, but this run "
                                         f"asks for {ours.get(field_name)}; resume with the checkpoint's options")
        elif theirs != ours:
            raise UserInputError(f"{where}: trained with {key} {theirs}, but this run asks for {ours}; "
                                 f"resume with the checkpoint's options")


def is_safetensors(path: Path) -> bool:
    """This project's format (by suffix or header), as opposed to a reference `.pth`."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_method_checkpoint(path: Path) -> MethodCheckpoint:
    """Tensors, decoded metadata and optimiser moments of any checkpoint in this project's format."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            raw_metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise UserInputError(f"{path}: corrupt safetensors prompt checkpoint ({error})") from error
    metadata = {key: _decode(value, path) for key, value in raw_metadata.items()}
    if metadata.get("format") != FORMAT_NAME:
        raise UserInputError(f"{path}: a safetensors file, but not a medclip-ad prompt checkpoint")
    broken = next((name for name, value in tensors.items()
                   if value.is_floating_point() and not torch.isfinite(value).all()), None)
    if broken is not None:
        raise UserInputError(f"{path}: {broken} holds NaN or infinite values (a diverged or corrupt training run)")
    optimizer_state = {k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)}
    prompts = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    return MethodCheckpoint(prompts, metadata, path, optimizer_state)


def _decode(value: str, path: Path) -> object:
    """A metadata value as the JSON it was written as; other strings stay strings."""
    try:
        return parse_json(value, f"{path} metadata")
    except json.JSONDecodeError:
        return value
