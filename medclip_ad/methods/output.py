"""The one output every detector returns, whatever its method."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DetectorOutput:
    """Image logits (B, 2) and [normal, abnormal] probability maps (B, 2, S, S), one per map the final map sums.

    Each map's anomaly map lies in [0, 1], so the final map lies in [0, `map_range`].
    """

    image_logits: torch.Tensor
    probability_maps: list[torch.Tensor]

    @property
    def map_range(self) -> float:
        return float(len(self.probability_maps))
