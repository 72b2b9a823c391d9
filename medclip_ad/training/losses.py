"""AnomalyCLIP's glocal training objective: global cross-entropy plus local focal + dice per layer.

The global term teaches the prompts to separate normal from anomalous images; the local terms teach
them where: focal loss for the hard pixels, dice (on both classes) against the small-lesion imbalance.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from medclip_ad.constants import LOCAL_LOSS_WEIGHT

FOCAL_GAMMA = 2.0
FOCAL_TARGET_CLAMP = 1e-5
FOCAL_EPSILON = 1e-5
DICE_SMOOTH = 1.0


def focal_loss(probabilities: torch.Tensor, masks: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Focal loss on class probabilities (B, 2, H, W) against binary masks (B, H, W), mean over pixels."""
    target = torch.stack([1 - masks, masks], dim=1).clamp(FOCAL_TARGET_CLAMP, 1 - FOCAL_TARGET_CLAMP)
    p_t = (target * probabilities).sum(dim=1) + FOCAL_EPSILON
    return (-(1 - p_t) ** gamma * p_t.log()).mean()


def dice_loss(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over the batch of the smoothed dice coefficient; inputs (B, H, W)."""
    dims = tuple(range(1, probability.dim()))
    overlap = (probability * target).sum(dim=dims)
    total = probability.sum(dim=dims) + target.sum(dim=dims)
    return 1 - ((2 * overlap + DICE_SMOOTH) / (total + DICE_SMOOTH)).mean()


def local_loss(probabilities: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """One layer's local term: focal + dice(abnormal, mask) + dice(normal, 1 - mask)."""
    return (focal_loss(probabilities, masks) + dice_loss(probabilities[:, 1], masks)
            + dice_loss(probabilities[:, 0], 1 - masks))


def glocal_loss(image_logits: torch.Tensor, labels: torch.Tensor, layer_probabilities: Sequence[torch.Tensor],
                masks: torch.Tensor | None, local_weight: float = LOCAL_LOSS_WEIGHT) -> dict[str, torch.Tensor]:
    """Total = CE(image logits, labels) + local_weight * sum of per-layer local terms.

    Pass `masks=None` for data with image labels only: the global term then trains alone.
    Returns the parts too, for logging.
    """
    global_term = F.cross_entropy(image_logits.reshape(-1, 2), labels.reshape(-1).long())
    if masks is None:
        zero = global_term.new_zeros(())
        return {"total": global_term, "global": global_term, "local": zero}
    masks = masks.reshape(-1, *masks.shape[-2:]).to(global_term.dtype)
    local_term = sum(local_loss(p, masks) for p in layer_probabilities)
    return {"total": global_term + local_weight * local_term, "global": global_term, "local": local_term}
