"""AnomalyCLIP's training recipe; the defaults reproduce the published prompts. Imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

from medclip_ad.constants import LOCAL_LOSS_WEIGHT

FINAL_CHECKPOINT = "prompts.safetensors"


@dataclass(frozen=True)
class TrainingConfig:
    """The optimisation recipe (published: Adam 1e-3, betas (0.5, 0.999), batch 8, 15 epochs, seed 111)."""

    epochs: int = 15
    batch_size: int = 8
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 111
    local_weight: float = LOCAL_LOSS_WEIGHT
    image_labels_only: bool = False
    workers: int = 0
