"""The AdaCLIP detector (ECCV 2024): frozen CLIP with hybrid prompts in both encoders, learned patch
projections, and hybrid semantic fusion for the image score.

Per image: the frozen, un-prompted CLIP embeds the image; from it both prompters make hybrid tokens;
the prompted text encoder gives that image's [normal, abnormal] features and the prompted vision
encoder its patch tokens at the feature layers, each projected into the joint space by its own
learned linear map. The returned map comes from the mean of the layers' logits. Everything is batched:
unlike the reference, a batch of B images gives the same results as B batches of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import CLIP

from medclip_ad.methods.adaclip.recipe import ADACLIP_LAYERS, ADACLIP_OBJECT_WORD
from medclip_ad.methods.adaclip.prompts import PROMPT_DEPTH, PROMPT_LENGTH, HybridPrompter
from medclip_ad.methods.adaclip.semantic_fusion import fused_embedding
from medclip_ad.methods.adaclip.text import HybridPromptTextEncoder
from medclip_ad.methods.adaclip.vision import HybridPromptVisionEncoder
from medclip_ad.methods.output import DetectorOutput
from medclip_ad.modeling.anomaly_maps import upsample_patch_grid
from medclip_ad.modeling.clip_backbone import model_activation
from medclip_ad.modeling.precision import full_precision
from medclip_ad.modeling.text_encoder import TextEncoder

LOGIT_SCALE = 100.0


@dataclass
class AdaCLIPTrainingOutput:
    """What training needs: the fused image logits (B, 2) and each feature layer's own map (B, 2, S, S)."""

    image_logits: torch.Tensor
    layer_probability_maps: list[torch.Tensor]


@dataclass
class AdaCLIPFeatures:
    """Per image: [normal, abnormal] text features (B, 2, D); the prompted image embedding before (B, D) and after
    its learned projection (normalised); normalised projected patch tokens (B, N, D) and 100 x cosine logits
    (B, N, 2) of each feature layer."""

    text: torch.Tensor
    image_embedding: torch.Tensor
    global_embedding: torch.Tensor
    patches: list[torch.Tensor]
    layer_logits: list[torch.Tensor]


class AdaCLIPWeights(nn.Module):
    """Everything AdaCLIP learns, and so everything its checkpoint holds: both prompters and the projections."""

    def __init__(self, text_width: int, vision_width: int, embed_dim: int, layer_count: int,
                 depth: int = PROMPT_DEPTH, length: int = PROMPT_LENGTH) -> None:
        super().__init__()
        self.text_prompter = HybridPrompter(embed_dim, text_width, depth, length)
        self.visual_prompter = HybridPrompter(embed_dim, vision_width, depth, length)
        self.patch_projections = nn.ModuleList([nn.Linear(vision_width, embed_dim) for _ in range(layer_count)])
        self.global_projection = nn.Linear(embed_dim, embed_dim)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> AdaCLIPWeights:
        """Weights with the shapes and values of saved tensors (this module's `state_dict` names)."""
        depth, length, text_width = tensors["text_prompter.static"].shape
        vision_width = tensors["visual_prompter.static"].shape[2]
        embed_dim = tensors["global_projection.weight"].shape[0]
        layer_count = len({name.split(".")[1] for name in tensors if name.startswith("patch_projections.")})
        weights = cls(text_width, vision_width, embed_dim, layer_count, depth, length)
        weights.load_state_dict(tensors)
        return weights


class AdaCLIP(nn.Module):
    """Images (B, 3, S, S), normalised -> image logits (B, 2) and one [normal, abnormal] map (B, 2, S, S).

    The one map fuses every feature layer (from their mean logits), so the final map lies in [0, 1]. The
    image logits always come from the fused embedding (hybrid semantic fusion), in training as at test
    time; in training mode each layer's own map is returned instead of the fused one, for the loss
    (`AdaCLIPTrainingOutput`).
    """

    def __init__(self, text_encoder: TextEncoder, clip: CLIP, image_size: int, weights: AdaCLIPWeights | None = None,
                 layers: Sequence[int] = ADACLIP_LAYERS, object_word: str = ADACLIP_OBJECT_WORD) -> None:
        super().__init__()
        self.vision_encoder = HybridPromptVisionEncoder(clip, image_size, layers)
        vision = self.vision_encoder
        self.weights = weights or AdaCLIPWeights(text_encoder.width, vision.width, vision.embed_dim, len(vision.layers))
        if len(self.weights.patch_projections) != len(vision.layers):
            raise ValueError(f"{len(self.weights.patch_projections)} learned projections for "
                             f"{len(vision.layers)} feature layers {list(vision.layers)}")
        self.text_encoder = HybridPromptTextEncoder(text_encoder, self.weights.text_prompter.length, object_word)
        self.image_size = image_size
        self.activation = model_activation(clip)
        self.map_range = 1.0

    @property
    def layers(self) -> tuple[int, ...]:
        return self.vision_encoder.layers

    def hybrid_prompts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's (text, visual) hybrid tokens, rounded through fp16 as the reference injects them.

        The generators read the frozen CLIP embedding as it is, not normalised (as the reference does).
        """
        with torch.no_grad():
            frozen = self.vision_encoder(images).image_embedding
        return self.weights.text_prompter(frozen).half(), self.weights.visual_prompter(frozen).half()

    def features(self, images: torch.Tensor) -> AdaCLIPFeatures:
        """Everything between the images and the fusion: per-image text, global and patch features, layer logits."""
        text_prompts, visual_prompts = self.hybrid_prompts(images)
        text = self.text_encoder(text_prompts)
        visual = self.vision_encoder(images, visual_prompts)
        with full_precision(images):  # the backbone may run in bf16; projections and logits do not
            text = text.float()
            global_embedding = F.normalize(self.weights.global_projection(visual.image_embedding.float()), dim=-1)
            patches = [F.normalize(projection(tokens.float()), dim=-1)
                       for projection, tokens in zip(self.weights.patch_projections, visual.patch_tokens)]
            layer_logits = [LOGIT_SCALE * torch.einsum("bnd,bkd->bnk", tokens, text) for tokens in patches]
        return AdaCLIPFeatures(text, visual.image_embedding, global_embedding, patches, layer_logits)

    def forward(self, images: torch.Tensor) -> DetectorOutput | AdaCLIPTrainingOutput:
        """Text features depend on each image here, so there is nothing to compute once per detector."""
        features = self.features(images)
        with full_precision(images):  # maps, fusion and clustering in fp32 whatever the backbone's precision
            mean_logits = torch.stack(features.layer_logits).mean(dim=0)
            abnormal = mean_logits.softmax(dim=-1)[..., 1]
            fused = fused_embedding(features.patches, abnormal, features.global_embedding)
            image_logits = LOGIT_SCALE * torch.einsum("bd,bkd->bk", fused, features.text)
            if self.training:
                layer_maps = [self._upsample(logits).softmax(dim=1) for logits in features.layer_logits]
                return AdaCLIPTrainingOutput(image_logits, layer_maps)
            return DetectorOutput(image_logits, [self._upsample(mean_logits).softmax(dim=1)])

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        """Patch logits (B, N, 2) -> (B, 2, S, S), bilinear with aligned corners as the reference."""
        return upsample_patch_grid(logits, self.image_size, align_corners=True)
