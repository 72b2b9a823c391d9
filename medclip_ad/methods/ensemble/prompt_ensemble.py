"""The training-free `ensemble` method: hand-written normal/abnormal sentences instead of learned ones.

It needs nothing but CLIP weights, which makes it the honest first run for a user without a prompt
checkpoint. The sentences live in configs/ensemble_prompts.json.
"""

from __future__ import annotations

import json
from importlib import resources

import torch
import torch.nn as nn
import torch.nn.functional as F

from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.modeling.tokenizer import tokenize


def ensemble_sentences(object_word: str | None = None) -> tuple[list[str], list[str]]:
    """All [normal] and [abnormal] sentences of the ensemble for an object word (default from the config)."""
    config = json.loads(resources.files("medclip_ad.configs").joinpath("ensemble_prompts.json").read_text())
    word = object_word or config["object"]

    def fill(states: list[str]) -> list[str]:
        return [template.format(state.format(word)) for state in states for template in config["templates"]]

    return fill(config["normal_states"]), fill(config["abnormal_states"])


class PromptEnsemble(nn.Module):
    """Fixed text features (2, D): the mean normalised feature of each class's sentences, normalised."""

    def __init__(self, text_encoder: TextEncoder, object_word: str | None = None) -> None:
        super().__init__()
        classes = []
        device = text_encoder.token_embedding.weight.device
        with torch.no_grad():
            for sentences in ensemble_sentences(object_word):
                token_ids = tokenize(sentences).to(device)
                features = text_encoder(text_encoder.embed_tokens(token_ids), token_ids)
                classes.append(F.normalize(features.mean(dim=0), dim=-1))
        self.register_buffer("features", torch.stack(classes), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.features
