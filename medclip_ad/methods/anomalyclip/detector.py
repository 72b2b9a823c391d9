"""The detector network: frozen CLIP with the DPAM encoder, and a source of [normal, abnormal] text features."""

from __future__ import annotations

import torch
import torch.nn as nn

from medclip_ad.methods.output import DetectorOutput
from medclip_ad.modeling.anomaly_maps import class_logits, patch_probability_maps
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.text_encoder import TextEncoder


class AnomalyCLIP(nn.Module):
    """Images (B, 3, S, S), normalised -> image logits and per-layer probability maps.

    `text_source` is a module whose forward returns the text features (2, D): the learned prompt
    learner (trainable) or a fixed prompt ensemble. In training mode they are computed on every call, so
    gradients reach the prompts; switching to eval mode computes them once, without gradients, and every
    call until training resumes uses those.
    """

    def __init__(self, text_encoder: TextEncoder, vision_encoder: DPAMVisionEncoder, text_source: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.vision_encoder = vision_encoder
        self.text_source = text_source
        self.image_size = vision_encoder.image_size
        self.map_range = float(len(self.layers))
        self.register_buffer("cached_text_features", None, persistent=False)

    @property
    def layers(self) -> tuple[int, ...]:
        return self.vision_encoder.layers

    def text_features(self) -> torch.Tensor:
        """[normal, abnormal] text features (2, D) from the text source, computed now."""
        return self.text_source()

    def train(self, mode: bool = True) -> AnomalyCLIP:
        super().train(mode)
        with torch.no_grad():
            self.cached_text_features = None if mode else self.text_features().float()
        return self

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        cached = self.cached_text_features
        text_features = self.text_features() if cached is None else cached
        visual = self.vision_encoder(images)
        logits = class_logits(visual.global_embedding, text_features)
        maps = [patch_probability_maps(tokens, text_features, self.image_size) for tokens in visual.layer_tokens]
        return DetectorOutput(logits, maps)
