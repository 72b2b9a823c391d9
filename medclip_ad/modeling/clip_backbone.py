"""Load a frozen CLIP backbone through open_clip, from wherever the user's weights are.

Sources, as the `--clip-weights` option spells them:
- `openai` (or `openai:MODEL`): the OpenAI release from `medclip-ad download-weights`' verified cache, or
  open_clip's, or downloaded through open_clip on first use (`weights_download`);
- a file path: an OpenAI TorchScript archive, a plain state dict with OpenAI key names, an open_clip
  checkpoint (`{"state_dict": ...}`) or a `.safetensors` file; the architecture is read off the shapes;
- `random:PRESET`: a randomly initialised CLIP of a real architecture shape, for tests and plumbing only.

The MLP activation is a property of how the weights were trained: OpenAI's releases use QuickGELU,
open_clip's own (LAION) trainings mostly GELU. `activation` states it (`quick_gelu`, `gelu`); `auto`
infers it where the source says for certain (an OpenAI release, OpenAI's TorchScript archive, our
random presets) and otherwise assumes it from the file's layout and says so on stderr. The choice and
why it was made are recorded on the backbone, and from there in every output's provenance.

Nothing in a weights file can run: plain files go through `torch.load(weights_only=True)`, and
TorchScript archives (OpenAI's format) through `torchscript_archive`, which rebuilds their tensors and
never compiles or calls the code they carry (`torch.jit.load` would).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import QuickGELU

from medclip_ad.config import ACTIVATIONS
from medclip_ad.constants import DEFAULT_BACKBONE
from medclip_ad.errors import UserInputError
from medclip_ad.modeling.torchscript_archive import is_torchscript_archive, read_torchscript_tensors
from medclip_ad.modeling.weights_download import release_weights_file
from medclip_ad.random_weights import RANDOM_PREFIX


@dataclass(frozen=True)
class RandomClipPreset:
    """Architecture of a random CLIP: shapes only, no pretrained knowledge."""

    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    embed_dim: int
    patch_size: int = 14
    pretrain_image_size: int = 336


# `tiny` has the shape of the parity fixture's model: real depth, narrow width.
RANDOM_PRESETS: dict[str, RandomClipPreset] = {
    "tiny": RandomClipPreset(vision_width=128, vision_layers=24, text_width=128, text_layers=12, embed_dim=96),
    "vit-b": RandomClipPreset(vision_width=768, vision_layers=12, text_width=512, text_layers=12, embed_dim=512,
                              patch_size=16, pretrain_image_size=224),
    "vit-l-14-336": RandomClipPreset(vision_width=1024, vision_layers=24, text_width=768, text_layers=12,
                                     embed_dim=768),
}

# Tensors OpenAI's files (and TorchScript archives' attributes) hold beside the weights: sizes, attention masks.
_NOT_WEIGHTS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask"})
_REQUIRED_KEYS = ("visual.proj", "visual.conv1.weight", "visual.positional_embedding", "text_projection",
                  "token_embedding.weight", "positional_embedding", "ln_final.weight")


@dataclass
class ClipBackbone:
    """A frozen fp32 open_clip CLIP plus where it came from (recorded in every output).

    `weights_file` is the file the weights were read from (None for random weights), so outputs can
    record its sha256: `openai` names a release, not the bytes that were loaded.
    """

    model: CLIP
    source: str
    architecture: str
    random_weights: bool
    activation: str  # quick_gelu or gelu
    activation_reason: str  # why: given, recorded, certain from the source, or announced as assumed
    weights_file: Path | None = None


def load_clip(weights: str, activation: str = "auto", reason: str = "--activation") -> ClipBackbone:
    """Build the backbone named by `weights` (see module docstring); never falls back silently.

    `reason` says why an explicit `activation` was chosen (recorded as provenance).
    """
    if activation not in ACTIVATIONS:
        raise UserInputError(f"--activation {activation}: choose from {', '.join(ACTIVATIONS)}")
    chosen = (activation, reason)
    if weights.startswith(RANDOM_PREFIX):
        return _random_clip(weights[len(RANDOM_PREFIX):], *(
            ("quick_gelu", "random preset default") if activation == "auto" else chosen))
    if weights == "openai" or weights.startswith("openai:"):
        return _openai_release(weights.partition(":")[2] or DEFAULT_BACKBONE, *(
            ("quick_gelu", "OpenAI release") if activation == "auto" else chosen))
    path = Path(weights)
    state_dict, is_open_clip_training_file = read_state_dict(path)
    if activation == "auto":
        chosen = _file_activation(path, is_open_clip_training_file)
    model = clip_from_state_dict(state_dict, chosen[0] == "quick_gelu", origin=weights)
    return ClipBackbone(model, weights, describe_architecture(model), False, *chosen, weights_file=path.resolve())


def _file_activation(path: Path, is_open_clip_training_file: bool) -> tuple[str, str]:
    """The activation of a weights file and why: certain for OpenAI's archive, an announced assumption otherwise."""
    if is_torchscript_archive(path):
        return "quick_gelu", "OpenAI TorchScript archive"
    if is_open_clip_training_file:
        activation, layout = "gelu", "an open_clip training checkpoint"
    else:
        activation, layout = "quick_gelu", "a plain state dict (OpenAI layout)"
    reason = f"assumed from the file layout ({layout})"
    print(f"note: {path}: activation {activation} {reason}; pass --activation quick_gelu|gelu to state it",
          file=sys.stderr)
    return activation, reason


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Read a CLIP state dict from any supported file; second value: it was an open_clip training file."""
    if not path.is_file():
        raise UserInputError(f"{path}: CLIP weights file not found")
    if is_torchscript_archive(path):
        return _checked_state_dict(path, read_torchscript_tensors(path)), False
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure means the file is not usable weights
        raise UserInputError(f"{path}: not a readable CLIP checkpoint ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'no detail'})") from error
    training_file = isinstance(raw, dict) and "state_dict" in raw
    state_dict = raw["state_dict"] if training_file else raw
    if not isinstance(state_dict, dict):
        raise UserInputError(f"{path}: not a CLIP checkpoint (holds a {type(state_dict).__name__}, not a state dict)")
    return _checked_state_dict(path, state_dict), training_file


def _checked_state_dict(path: Path, state_dict: dict) -> dict[str, torch.Tensor]:
    """The tensors under OpenAI key names, refused when the keys every CLIP ViT has are missing."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise UserInputError(f"{path}: not a CLIP ViT checkpoint with OpenAI key names (missing {', '.join(missing)})")
    return state_dict


def clip_from_state_dict(state_dict: dict[str, torch.Tensor], quick_gelu: bool, origin: str) -> CLIP:
    """Infer the ViT CLIP architecture from tensor shapes and load the weights in fp32."""
    vision_width, _, patch_size, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["ln_final.weight"].shape[0]
    vision_cfg = CLIPVisionCfg(
        layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        width=vision_width, head_width=64, patch_size=patch_size, image_size=patch_size * grid)
    text_cfg = CLIPTextCfg(
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        width=text_width, heads=max(1, text_width // 64),
        layers=_count_blocks(state_dict, "transformer.resblocks."))
    model = CLIP(state_dict["text_projection"].shape[1], vision_cfg, text_cfg, quick_gelu=quick_gelu)
    weights = {k: v.float() for k, v in state_dict.items() if k.rpartition(".")[2] not in _NOT_WEIGHTS}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise UserInputError(f"{origin}: CLIP weights do not fit the architecture read from their shapes "
                             f"({str(error).splitlines()[0]})") from error
    return _freeze(model)


def model_activation(model: CLIP) -> str:
    """The activation a built CLIP's MLPs run: `quick_gelu` or `gelu` (what its checkpoints record)."""
    activation = model.visual.transformer.resblocks[0].mlp.gelu
    return "quick_gelu" if isinstance(activation, QuickGELU) else "gelu"


def describe_architecture(model: CLIP) -> str:
    """A short human-readable architecture name, e.g. `ViT-L/14@336 (text 768)`."""
    visual = model.visual
    patch = visual.conv1.kernel_size[0]
    width = visual.conv1.out_channels
    image = patch * visual.grid_size[0]
    text_width = model.token_embedding.weight.shape[1]
    return f"ViT w{width} L{len(visual.transformer.resblocks)} /{patch}@{image} (text w{text_width})"


def _openai_release(model_name: str, activation: str, reason: str) -> ClipBackbone:
    """Download (or reuse open_clip's cache of) an OpenAI release and load it through the file path."""
    config = open_clip.pretrained.get_pretrained_cfg(model_name, "openai")
    if not config:
        raise UserInputError(f"openai:{model_name}: open_clip has no OpenAI release of that model")
    path = release_weights_file(model_name, config)
    state_dict, _ = read_state_dict(Path(path))
    model = clip_from_state_dict(state_dict, quick_gelu=activation == "quick_gelu", origin=f"openai:{model_name}")
    return ClipBackbone(model, f"openai:{model_name}", describe_architecture(model), False, activation, reason,
                        weights_file=Path(path).resolve())


def _random_clip(preset_name: str, activation: str, reason: str) -> ClipBackbone:
    if preset_name not in RANDOM_PRESETS:
        raise UserInputError(f"random:{preset_name}: unknown random preset (choose from "
                             f"{', '.join(RANDOM_PRESETS)})")
    preset = RANDOM_PRESETS[preset_name]
    vision_cfg = CLIPVisionCfg(layers=preset.vision_layers, width=preset.vision_width, head_width=64,
                               patch_size=preset.patch_size, image_size=preset.pretrain_image_size)
    text_cfg = CLIPTextCfg(context_length=77, vocab_size=49408, width=preset.text_width,
                           heads=max(1, preset.text_width // 64), layers=preset.text_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random model on every run, so tests and demos are reproducible
        model = CLIP(preset.embed_dim, vision_cfg, text_cfg, quick_gelu=activation == "quick_gelu")
    return ClipBackbone(_freeze(model), f"random:{preset_name}", describe_architecture(model), True, activation, reason)


def _count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def _freeze(model: CLIP) -> CLIP:
    model = model.float().eval()
    model.requires_grad_(False)
    return model
