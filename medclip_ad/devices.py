"""Which torch device a `--device` option means."""

from __future__ import annotations

import torch

from medclip_ad.errors import UserInputError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a user error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: no CUDA device is available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserInputError(f"--device {name}: choose auto, cpu or cuda")
    return torch.device(name)
