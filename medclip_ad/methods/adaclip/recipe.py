"""AdaCLIP's published settings and training recipe. Imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

# The published feature layers (1-based ViT blocks) and the object word of its prompts.
ADACLIP_LAYERS: tuple[int, ...] = (6, 12, 18, 24)
ADACLIP_OBJECT_WORD = "object"
FINAL_CHECKPOINT = "adaclip.safetensors"


@dataclass(frozen=True)
class AdaCLIPTrainingConfig:
    """The optimisation recipe; the defaults are the published one (AdamW 0.01, 5 epochs, batch 1)."""

    epochs: int = 5
    batch_size: int = 1
    learning_rate: float = 0.01
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.01
    seed: int = 111
    workers: int = 0
    object_word: str = ADACLIP_OBJECT_WORD
    image_labels_only: bool = False
    feature_layers: tuple[int, ...] = ADACLIP_LAYERS
    mosaic_probability: float = 0.2  # the reference tiles 4 MVTec images of a class into one this often
