"""Prompt checkpoints: this project's safetensors format, and import of the reference `.pth` format.

A prompt checkpoint is small (43,008 values for ViT-L) but only means something together with the
backbone, layers and image size it was trained with, so our format carries that provenance in the
safetensors metadata. Nothing is ever unpickled with code execution.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from medclip_ad import __version__
from medclip_ad.errors import UserInputError
from medclip_ad.io.json_documents import parse_json
from medclip_ad.methods.anomalyclip.prompt_learner import ABNORMAL_SUFFIX, ObjectAgnosticPromptLearner
from medclip_ad.modeling.tokenizer import tokenize

FORMAT_NAME = "medclip-ad-prompts"
FORMAT_VERSION = 1
# Tensors under this prefix hold optimiser moments for resuming training, not prompts.
OPTIMIZER_PREFIX = "optimizer."
# Every tensor of a reference AdaCLIP checkpoint is named under the prompters' and projections' parent module.
ADACLIP_REFERENCE_PREFIX = "clip_model."
# CLIP's text context in tokens: the learned words and a prompt's fixed words must fit in it.
TEXT_CONTEXT_LENGTH = 77
DEEP_PROMPT_PREFIX = "deep_prompts."


@dataclass
class PromptCheckpoint:
    """Learned prompt tensors under this project's names, plus provenance.

    Tensors: `ctx_normal` and `ctx_abnormal` (n_ctx, width), `deep_prompts.{i}` (length, width).
    Training checkpoints also carry Adam's moments in `optimizer_state`.
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, object] = field(default_factory=dict)
    path: Path | None = None
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def text_width(self) -> int:
        return self.tensors["ctx_normal"].shape[1]

    @property
    def n_ctx(self) -> int:
        return self.tensors["ctx_normal"].shape[0]

    @property
    def depth(self) -> int:
        return 1 + sum(1 for name in self.tensors if name.startswith("deep_prompts."))

    @property
    def deep_length(self) -> int:
        return self.tensors["deep_prompts.0"].shape[0] if self.depth > 1 else 0


def file_sha256(path: Path) -> str:
    """Content hash recorded beside every result, so a result names the exact prompts it used."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def learner_tensors(learner: ObjectAgnosticPromptLearner) -> dict[str, torch.Tensor]:
    """The learner's trainable tensors under this project's names, detached on the CPU."""
    return {name: value.detach().float().cpu().contiguous() for name, value in learner.named_parameters()}


def save_prompt_checkpoint(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, object]) -> None:
    """Write a `.safetensors` prompt checkpoint atomically, with provenance and the package version."""
    path = Path(path)
    full_metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__,
                     **metadata}
    encoded = {key: json.dumps(value) for key, value in full_metadata.items()}
    temporary = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary), metadata=encoded)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def load_prompt_checkpoint(path: Path | str) -> PromptCheckpoint:
    """Read either format; anything else gets one clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: prompt checkpoint not found")
    if is_safetensors(path):
        return _load_safetensors(path)
    raw = read_reference_file(path)
    if reference_method(raw) != "anomalyclip":
        found = reference_method(raw)
        hint = f" (a reference {found} checkpoint: pass --method {found})" if found else ""
        raise UserInputError(f"{path}: not a prompt checkpoint (expected a safetensors file or a reference "
                             f"file holding {{'prompt_learner': state_dict}}){hint}")
    tensors = tensors_from_reference(raw["prompt_learner"], path)
    check_prompt_tensors(tensors, path)
    return PromptCheckpoint(tensors, {"method": "anomalyclip", "imported_from": "reference"}, path)


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


def load_method_checkpoint(path: Path | str, method: str) -> PromptCheckpoint:
    """Read a `.safetensors` checkpoint of a method that learns no prompts (`rwda`'s head), checking its method.

    Such checkpoints share the prompt format and provenance; only their tensors differ.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {method} checkpoint not found")
    if not is_safetensors(path):
        raise UserInputError(f"{path}: not a {method} checkpoint (train one with `medclip-ad train --method {method}`)")
    checkpoint = _read_safetensors(path)
    found = checkpoint.metadata.get("method")
    if found != method:
        raise UserInputError(f"{path}: a checkpoint of method {found or 'unknown'}, but --method {method} needs "
                             f"one from `medclip-ad train --method {method}`")
    return checkpoint


def optimizer_tensors(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam(W)'s per-parameter moments as checkpoint tensors, so a resumed run continues exactly."""
    tensors = {}
    for name, parameter in module.named_parameters():
        for key, value in optimizer.state.get(parameter, {}).items():
            tensors[f"{OPTIMIZER_PREFIX}{name}.{key}"] = torch.as_tensor(value).detach().float().cpu().reshape(-1)
    return tensors


def restore_optimizer_state(checkpoint: PromptCheckpoint, module: torch.nn.Module,
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


def check_resume_recipe(checkpoint: PromptCheckpoint, run_provenance: dict[str, object]) -> None:
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


def tensors_from_reference(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Rename the reference learner's tensors; its unused projections and fixed buffers are dropped."""
    try:
        ctx_normal, ctx_abnormal = state["ctx_pos"], state["ctx_neg"]
    except KeyError as error:
        raise UserInputError(f"{path}: reference prompt checkpoint lacks {error.args[0]}") from error
    for name, value in state.items():
        if (name in ("ctx_pos", "ctx_neg") or name.startswith("compound_prompts_text.")) and \
                not isinstance(value, torch.Tensor):
            raise UserInputError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    if ctx_normal.ndim < 2 or ctx_abnormal.ndim < 2:
        raise UserInputError(f"{path}: ctx_pos/ctx_neg have shapes {tuple(ctx_normal.shape)} and "
                             f"{tuple(ctx_abnormal.shape)}; the reference stores (1, 1, words, width)")
    width = ctx_normal.shape[-1]
    tensors = {"ctx_normal": ctx_normal.reshape(-1, width).float(),
               "ctx_abnormal": ctx_abnormal.reshape(-1, width).float()}
    index = 0
    while f"compound_prompts_text.{index}" in state:
        tensors[f"deep_prompts.{index}"] = state[f"compound_prompts_text.{index}"].float()
        index += 1
    return tensors


def check_prompt_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse prompts no learner can take, before a model is built: wrong types or ranks, a context that
    does not fit CLIP's 77 tokens, gaps in the deep prompts, NaN or infinite values."""
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise UserInputError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
        if not value.is_floating_point():
            raise UserInputError(f"{path}: {name} holds {str(value.dtype).replace('torch.', '')} values; prompts "
                                 f"are floating point")
        if value.ndim != 2 or 0 in value.shape:
            raise UserInputError(f"{path}: {name} has shape {tuple(value.shape)}; prompts are (words, width)")
        if not torch.isfinite(value).all():
            raise UserInputError(f"{path}: {name} holds NaN or infinite values (a diverged or corrupt training run)")
    normal, abnormal = tensors["ctx_normal"], tensors["ctx_abnormal"]
    if normal.shape != abnormal.shape:
        raise UserInputError(f"{path}: ctx_normal {tuple(normal.shape)} and ctx_abnormal {tuple(abnormal.shape)} "
                             f"differ in shape")
    longest = TEXT_CONTEXT_LENGTH - _fixed_prompt_tokens()
    if normal.shape[0] > longest:
        raise UserInputError(f"{path}: {normal.shape[0]} learned context words do not fit CLIP's "
                             f"{TEXT_CONTEXT_LENGTH}-token text context beside the prompt's fixed words (at most "
                             f"{longest})")
    deep = sorted(name for name in tensors if name.startswith(DEEP_PROMPT_PREFIX))
    expected = [f"{DEEP_PROMPT_PREFIX}{i}" for i in range(len(deep))]
    if sorted(deep, key=_deep_index) != expected:
        raise UserInputError(f"{path}: deep prompts must be numbered {DEEP_PROMPT_PREFIX}0 to "
                             f"{DEEP_PROMPT_PREFIX}{len(deep) - 1} without gaps, found {', '.join(deep)}")
    for name in expected:
        value = tensors[name]
        if value.shape[1] != normal.shape[1] or value.shape[0] >= TEXT_CONTEXT_LENGTH:
            raise UserInputError(f"{path}: {name} has shape {tuple(value.shape)}; deep prompts are (length < "
                                 f"{TEXT_CONTEXT_LENGTH}, width {normal.shape[1]})")


def _deep_index(name: str) -> int:
    suffix = name[len(DEEP_PROMPT_PREFIX):]
    return int(suffix) if suffix.isdigit() else -1


def _fixed_prompt_tokens() -> int:
    """Tokens of the longer learned sentence besides its learned words: start, "damaged object.", end."""
    return int((tokenize([ABNORMAL_SUFFIX]) != 0).sum())


def load_into_learner(checkpoint: PromptCheckpoint, learner: ObjectAgnosticPromptLearner) -> None:
    """Copy checkpoint tensors into a learner of the right shape, or say exactly what does not fit."""
    expected = dict(learner.named_parameters())
    where = checkpoint.path or "prompt checkpoint"
    if set(expected) != set(checkpoint.tensors):
        raise UserInputError(f"{where}: holds {sorted(checkpoint.tensors)}, the model expects {sorted(expected)}")
    for name, parameter in expected.items():
        value = checkpoint.tensors[name]
        if value.shape != parameter.shape:
            raise UserInputError(f"{where}: {name} has shape {tuple(value.shape)} but this backbone needs "
                                 f"{tuple(parameter.shape)} (text width {parameter.shape[-1]}): the prompts "
                                 f"were trained for another backbone")
        with torch.no_grad():
            parameter.copy_(value)


def is_safetensors(path: Path) -> bool:
    """This project's format (by suffix or header), as opposed to a reference `.pth`."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _load_safetensors(path: Path) -> PromptCheckpoint:
    checkpoint = _read_safetensors(path)
    if "ctx_normal" not in checkpoint.tensors:
        method = checkpoint.metadata.get("method")
        hint = f" (a {method} checkpoint: pass --method {method})" if method not in (None, "anomalyclip") else ""
        raise UserInputError(f"{path}: prompt checkpoint lacks ctx_normal{hint}")
    check_prompt_tensors(checkpoint.tensors, path)
    return checkpoint


def _read_safetensors(path: Path) -> PromptCheckpoint:
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
    return PromptCheckpoint(prompts, metadata, path, optimizer_state)


def _decode(value: str, path: Path) -> object:
    """A metadata value as the JSON it was written as; other strings stay strings."""
    try:
        return parse_json(value, f"{path} metadata")
    except json.JSONDecodeError:
        return value
