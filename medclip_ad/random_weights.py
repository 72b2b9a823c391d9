"""Random CLIP weights (`random:tiny`, `random:base`): how they are asked for, and the warning every output
made with them carries. Apart from the model code, so that what only shows or checks the flag (the viewer's
page, reports) needs no torch.
"""

from __future__ import annotations

RANDOM_PREFIX = "random:"
RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS: this model has random CLIP weights (random:*); its scores and maps "
                          "are meaningless and only show that the pipeline runs")


def is_random_weights(clip_weights: str) -> bool:
    """Whether a weights source names the random test CLIP, whose outputs must be flagged everywhere."""
    return clip_weights.strip().startswith(RANDOM_PREFIX)
