"""The `rwda` classifier and the detector that applies it to images.

The head is trained on text embeddings only (see random_word_prompts.py). Because CLIP puts images and
text in one joint space, the same head can then score image embeddings: the DPAM global embedding gives
the image logits, and every DPAM patch token of every chosen layer gives patch probabilities, which are
upsampled exactly like AnomalyCLIP's maps: the detector returns the same `DetectorOutput`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medclip_ad.methods.output import DetectorOutput
from medclip_ad.methods.rwda.recipe import RWDA_HIDDEN_UNITS
from medclip_ad.modeling.anomaly_maps import upsample_patch_grid
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.precision import full_precision

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
    """Images (B, 3, S, S), normalised -> image logits and per-layer maps, scored by the head."""

    def __init__(self, vision_encoder: DPAMVisionEncoder, head: RandomWordHead) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.head = head
        self.image_size = vision_encoder.image_size
        self.map_range = float(len(self.layers))

    @property
    def layers(self) -> tuple[int, ...]:
        return self.vision_encoder.layers

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        """The head runs in fp32 whatever the backbone's precision."""
        visual = self.vision_encoder(images)
        with full_precision(images):
            image_logits = self.head(visual.global_embedding.float())
            maps = [upsample_patch_grid(self.head(tokens[:, 1:].float()).softmax(dim=-1), self.image_size)
                    for tokens in visual.layer_tokens]
        return DetectorOutput(image_logits, maps)
