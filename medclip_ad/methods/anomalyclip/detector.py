"""The detector network: frozen CLIP with the DPAM encoder, and a source of [normal, abnormal] text features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from medclip_ad.modeling.anomaly_maps import class_logits, patch_probability_maps
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.text_encoder import TextEncoder


@dataclass
class DetectorOutput:
    """Image logits (B, 2) and per-layer [normal, abnormal] probability maps (B, 2, S, S), before any blur."""

    image_logits: torch.Tensor
    probability_maps: list[torch.Tensor]


class AnomalyCLIP(nn.Module):
    """Images (B, 3, S, S), normalised -> image logits and per-layer probability maps.

    `text_source` is a module whose forward returns the text features (2, D): the learned prompt
    learner (trainable) or a fixed prompt ensemble.
    """

    def __init__(self, text_encoder: TextEncoder, vision_encoder: DPAMVisionEncoder, text_source: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.vision_encoder = vision_encoder
        self.text_source = text_source
        self.image_size = vision_encoder.image_size

    @property
    def layers(self) -> tuple[int, ...]:
        return self.vision_encoder.layers

    def text_features(self) -> torch.Tensor:
        return self.text_source()

    def forward(self, images: torch.Tensor, text_features: torch.Tensor | None = None) -> DetectorOutput:
        """Pass cached `text_features` at inference; leave it None in training so gradients reach the prompts."""
        if text_features is None:
            text_features = self.text_features()
        visual = self.vision_encoder(images)
        logits = class_logits(visual.global_embedding, text_features)
        maps = [patch_probability_maps(tokens, text_features, self.image_size) for tokens in visual.layer_tokens]
        return DetectorOutput(logits, maps)
