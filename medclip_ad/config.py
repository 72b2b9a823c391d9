"""What a user chooses when loading a detector, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from medclip_ad.constants import DEFAULT_LAYERS, IMAGE_SIZE

METHODS: tuple[str, ...] = ("anomalyclip", "ensemble", "rwda", "adaclip")
DEFAULT_METHOD = "anomalyclip"
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that decides a detector's outputs (recorded as provenance beside every result).

    clip_weights: `openai`, `openai:MODEL`, a checkpoint path, or `random:PRESET` (tests only).
    prompts: a prompt checkpoint (this project's .safetensors or the reference .pth); required by
        `anomalyclip`, ignored by `ensemble`; for `rwda`, its trained head (.safetensors).
    precision: `auto` is fp32 on CPU and bf16 autocast on CUDA.
    """

    clip_weights: str = "openai"
    prompts: str | None = None
    method: str = DEFAULT_METHOD
    layers: tuple[int, ...] = DEFAULT_LAYERS
    image_size: int = IMAGE_SIZE
    device: str = "auto"
    batch_size: int = 8
    precision: str = "auto"
    quick_gelu: bool | None = None
