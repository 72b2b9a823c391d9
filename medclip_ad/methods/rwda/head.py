"""The `rwda` classifier and the detector that applies it to images.

The head is trained on text embeddings only (see random_word_prompts.py). Because CLIP puts images and
text in one joint space, the same head can then score image embeddings: the DPAM global embedding gives
the image logits, and every DPAM patch token of every chosen layer gives patch probabilities, which are
upsampled exactly like AnomalyCLIP's maps. The detector therefore returns a `DetectorOutput`, and
everything downstream (predictor, maps, blur, evaluation, export) works unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medclip_ad.config import RWDA_HIDDEN_UNITS
from medclip_ad.methods.anomalyclip.detector import DetectorOutput
from medclip_ad.modeling.dpam import DPAMVisionEncoder

# Width of the head's single hidden layer.


class RandomWordHead(nn.Module):
    """Joint-space embeddings (..., D) -> [normal, abnormal] logits (..., 2) through one hidden layer."""

    def __init__(self, embed_dim: int, hidden_units: int = RWDA_HIDDEN_UNITS) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(embed_dim, hidden_units), nn.ReLU(), nn.Linear(hidden_units, 2))

    @property
    def embed_dim(self) -> int:
        return self.layers[0].in_features

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> RandomWordHead:
        """A head with the shape and values of saved tensors (its `state_dict` names)."""
        hidden_units, embed_dim = tensors["layers.0.weight"].shape
        head = cls(embed_dim, hidden_units)
        head.load_state_dict(tensors)
        return head

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


class RandomWordDetector(nn.Module):
    """Images (B, 3, S, S), normalised -> the same `DetectorOutput` as AnomalyCLIP, scored by the head."""

    def __init__(self, vision_encoder: DPAMVisionEncoder, head: RandomWordHead) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.head = head
        self.image_size = vision_encoder.image_size
        self.register_buffer("no_text_features", torch.zeros(0, head.embed_dim), persistent=False)

    @property
    def layers(self) -> tuple[int, ...]:
        return self.vision_encoder.layers

    def text_features(self) -> torch.Tensor:
        """An empty (0, D) tensor: the head replaces text features, so callers have nothing to cache."""
        return self.no_text_features

    def forward(self, images: torch.Tensor, text_features: torch.Tensor | None = None) -> DetectorOutput:
        """`text_features` is accepted for AnomalyCLIP's signature and not used."""
        visual = self.vision_encoder(images)
        image_logits = self.head(visual.global_embedding)
        maps = [self._patch_probability_maps(tokens) for tokens in visual.layer_tokens]
        return DetectorOutput(image_logits, maps)

    def _patch_probability_maps(self, layer_tokens: torch.Tensor) -> torch.Tensor:
        """One layer's tokens (B, 1+N, D) -> [normal, abnormal] probabilities (B, 2, S, S), bilinear as AnomalyCLIP."""
        probabilities = self.head(layer_tokens[:, 1:]).softmax(dim=-1)
        grid = self.vision_encoder.grid
        square = probabilities.transpose(1, 2).reshape(-1, 2, grid, grid)
        return F.interpolate(square, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
