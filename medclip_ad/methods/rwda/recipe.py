"""The rwda text-only recipe: its prompt set, its head's size and its optimisation. Imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass

# Hidden units of the head's one hidden layer.
RWDA_HIDDEN_UNITS = 128
FINAL_CHECKPOINT = "rwda_head.safetensors"


@dataclass(frozen=True)
class RandomWordSettings:
    """How many prompts of each class to draw, and how they are diversified."""

    prompts_per_class: int = 1024
    max_random_words: int = 4  # each prompt gets 1..max_random_words random words
    max_tokens_per_word: int = 3  # each random word is 1..max_tokens_per_word tokens long


@dataclass(frozen=True)
class RandomWordTrainingConfig:
    """The recipe: 10 epochs of Adam 1e-3 in batches of 64 over 1024 prompts per class."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 111
    hidden_units: int = RWDA_HIDDEN_UNITS
    prompts: RandomWordSettings = RandomWordSettings()
    workers: int = 0
