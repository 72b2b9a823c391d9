"""A straightforward loop port of the reference AUPRO, written from shared/fixtures/metrics/README.md.

Kept only as the yardstick for `medclip_ad.evaluation.metrics.aupro(flavour="reference")`: the test checks the two
agree and `bench_aupro.py` times them. Like the reference, it relabels every mask at every threshold.
"""

import numpy as np
from numpy.typing import ArrayLike
from skimage import measure
from sklearn.metrics import auc


def reference_aupro_loop(masks: ArrayLike, maps: ArrayLike, n_thresholds: int = 200, max_fpr: float = 0.3) -> float:
    """Reference AUPRO: one full pass over every image and region per threshold."""
    masks, maps = np.asarray(masks) > 0, np.asarray(maps)
    low, high = maps.min(), maps.max()
    pros, fprs = [], []
    for threshold in np.arange(low, high, (high - low) / n_thresholds):
        binary = maps > threshold
        fractions = []
        for mask, predicted in zip(masks, binary):
            for region in measure.regionprops(measure.label(mask)):
                rows, cols = region.coords[:, 0], region.coords[:, 1]
                fractions.append(predicted[rows, cols].sum() / region.area)
        pros.append(np.mean(fractions))
        fprs.append(np.logical_and(binary, ~masks).sum() / (~masks).sum())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < max_fpr
    kept = fprs[keep]
    return float(auc((kept - kept.min()) / (kept.max() - kept.min()), pros[keep]))
