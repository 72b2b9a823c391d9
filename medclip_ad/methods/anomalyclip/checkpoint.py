"""AnomalyCLIP's method checkpoints: learned prompts in this project's format, and the reference `.pth`.

Tensors: `ctx_normal` and `ctx_abnormal` (n_ctx, width), `deep_prompts.{i}` (length, width). The
reference file `{"prompt_learner": state_dict}` is read with `torch.load(weights_only=True)` and renamed;
nothing is ever unpickled with code execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medclip_ad.constants import DEFAULT_LAYERS
from medclip_ad.errors import UserInputError
from medclip_ad.methods.anomalyclip.method import METHOD
from medclip_ad.methods.anomalyclip.prompt_learner import ABNORMAL_SUFFIX, ObjectAgnosticPromptLearner
from medclip_ad.io.file_digest import file_sha256
from medclip_ad.methods.checkpoint import (
    MethodCheckpoint,
    is_safetensors,
    read_method_checkpoint,
    read_reference_file,
    reference_method,
    save_method_checkpoint,
)
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.modeling.tokenizer import tokenize

# CLIP's text context in tokens: the learned words and a prompt's fixed words must fit in it.
TEXT_CONTEXT_LENGTH = 77
DEEP_PROMPT_PREFIX = "deep_prompts."


@dataclass(frozen=True)
class PromptShape:
    """The learner shape a prompt checkpoint was trained with."""

    n_ctx: int
    depth: int
    deep_length: int
    text_width: int

    @classmethod
    def of(cls, checkpoint: MethodCheckpoint) -> PromptShape:
        tensors = checkpoint.tensors
        depth = 1 + sum(1 for name in tensors if name.startswith("deep_prompts."))
        return cls(n_ctx=tensors["ctx_normal"].shape[0], depth=depth,
                   deep_length=tensors["deep_prompts.0"].shape[0] if depth > 1 else 0,
                   text_width=tensors["ctx_normal"].shape[1])


def new_prompt_learner(text_encoder: TextEncoder, like: MethodCheckpoint | None = None) -> ObjectAgnosticPromptLearner:
    """A prompt learner with the published shape, or with the shape of an existing checkpoint."""
    if like is None:
        return ObjectAgnosticPromptLearner(text_encoder)
    shape = PromptShape.of(like)
    return ObjectAgnosticPromptLearner(text_encoder, n_ctx=shape.n_ctx, depth=shape.depth,
                                       deep_length=shape.deep_length or 1)


def import_reference(source: Path, out: Path, provenance: dict[str, object]) -> MethodCheckpoint:
    """Convert a reference `.pth` to this project's format with `provenance` (backbone, data; `layers`
    None: the published ones) added."""
    checkpoint = load_prompt_checkpoint(source)
    shape = PromptShape.of(checkpoint)
    save_method_checkpoint(out, checkpoint.tensors, {
        **provenance, "method": METHOD, "layers": list(provenance.get("layers") or DEFAULT_LAYERS),
        "n_ctx": shape.n_ctx, "depth": shape.depth, "t_n_ctx": shape.deep_length,
        "imported_from": str(source), "imported_sha256": file_sha256(source)})
    return checkpoint


def learner_tensors(learner: ObjectAgnosticPromptLearner) -> dict[str, torch.Tensor]:
    """The learner's trainable tensors under this project's names, detached on the CPU."""
    return {name: value.detach().float().cpu().contiguous() for name, value in learner.named_parameters()}


def load_prompt_checkpoint(path: Path | str) -> MethodCheckpoint:
    """Read either format; anything else gets one clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: prompt checkpoint not found")
    if is_safetensors(path):
        return _load_safetensors(path)
    raw = read_reference_file(path)
    found = reference_method(raw)
    if found != METHOD:
        hint = f" (a reference {found} checkpoint: pass --method {found})" if found else ""
        raise UserInputError(f"{path}: not a prompt checkpoint (expected a safetensors file or a reference "
                             f"file holding {{'prompt_learner': state_dict}}){hint}")
    tensors = tensors_from_reference(raw["prompt_learner"], path)
    check_prompt_tensors(tensors, path)
    return MethodCheckpoint(tensors, {"method": METHOD, "imported_from": "reference"}, path)


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


def load_into_learner(checkpoint: MethodCheckpoint, learner: ObjectAgnosticPromptLearner) -> None:
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


def _load_safetensors(path: Path) -> MethodCheckpoint:
    checkpoint = read_method_checkpoint(path)
    if "ctx_normal" not in checkpoint.tensors:
        method = checkpoint.metadata.get("method")
        hint = f" (a {method} checkpoint: pass --method {method})" if method not in (None, METHOD) else ""
        raise UserInputError(f"{path}: prompt checkpoint lacks ctx_normal{hint}")
    check_prompt_tensors(checkpoint.tensors, path)
    return checkpoint
