"""The training-free prompt ensemble as the registry sees it: fixed sentences on the DPAM encoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medclip_ad.methods import CHECKPOINT_FREE_METHOD
from medclip_ad.methods.method import Method

if TYPE_CHECKING:
    from medclip_ad.config import DetectorConfig
    from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
    from medclip_ad.modeling.clip_backbone import ClipBackbone


def build(config: DetectorConfig, backbone: ClipBackbone) -> tuple[AnomalyCLIP, None]:
    """AnomalyCLIP's detector with the ensemble's sentences as its text side; no checkpoint."""
    from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
    from medclip_ad.methods.ensemble.prompt_ensemble import PromptEnsemble
    from medclip_ad.modeling.dpam import build_dpam_encoder
    from medclip_ad.modeling.text_encoder import TextEncoder

    text_encoder = TextEncoder(backbone.model)
    vision_encoder = build_dpam_encoder(backbone, config.image_size, config.layers)
    return AnomalyCLIP(text_encoder, vision_encoder, PromptEnsemble(text_encoder)), None


ENSEMBLE = Method(name=CHECKPOINT_FREE_METHOD, summary="training-free templates", build=build)
