"""Evaluation metrics: image AUROC / AP / F1-max, pooled-pixel AUROC / AP / F1-max, and AUPRO.

Every metric returns None where it is undefined (a single class, no anomalous region) so that callers
print "n/a" rather than a misleading 0. Masks count any value > 0 as anomalous; masks and maps are
(N, H, W) arrays or lists of equally shaped 2-D arrays.
"""

from collections.abc import Iterable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from skimage import measure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score


def _binary(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """Flat boolean labels and scores, or None when only one class occurs (the metrics are undefined)."""
    labels = np.asarray(labels).ravel() > 0
    if labels.all() or not labels.any():
        return None
    return labels, np.asarray(scores).ravel()


def _pooled(masks: ArrayLike, maps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """All pixels of all images as one labelled sample, as the reference pixel metrics pool them."""
    return np.asarray(masks).ravel(), np.asarray(maps).ravel()


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the ROC curve of image scores against image labels (1 = anomalous)."""
    data = _binary(labels, scores)
    return None if data is None else float(roc_auc_score(*data))


def image_ap(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Average precision of image scores, scikit-learn's step-wise definition as in the reference."""
    data = _binary(labels, scores)
    return None if data is None else float(average_precision_score(*data))


def f1_max(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Best F1 over all thresholds of the precision-recall curve (the image F1-max)."""
    data = _binary(labels, scores)
    if data is None:
        return None
    precision, recall, _ = precision_recall_curve(*data)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(f1.max())


def pixel_auroc(masks: ArrayLike, maps: ArrayLike) -> float | None:
    """AUROC over every pixel of every image pooled; None if no pixel (or every pixel) is anomalous."""
    return image_auroc(*_pooled(masks, maps))


def pixel_ap(masks: ArrayLike, maps: ArrayLike) -> float | None:
    """Average precision over every pixel of every image pooled."""
    return image_ap(*_pooled(masks, maps))


def pixel_f1_max(masks: ArrayLike, maps: ArrayLike) -> float | None:
    """F1-max over every pixel of every image pooled."""
    return f1_max(*_pooled(masks, maps))


def _pro_fpr_curve(
    masks: np.ndarray, exceeded: Iterable[np.ndarray], n_thresholds: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """PRO and FPR of the binarisation `map > t` at every one of `n_thresholds` ascending thresholds at once.

    `exceeded` holds, per image and pixel, how many thresholds the pixel's score is above; a pixel with
    count k is above thresholds 0..k-1, so the count above threshold i is the sum over counts i+1 onward.
    Per-region fractions enter as pixel weights 1 / region area (8-connected regions), so PRO = weighted
    count / number of regions. Returns None when there is no anomalous region or no normal pixel.
    """
    n_bins = n_thresholds + 1
    region_mass = np.zeros(n_bins)
    normal = np.zeros(n_bins, dtype=np.int64)
    n_regions = 0
    for mask, counts in zip(masks, exceeded):  # one image at a time; the work inside is vectorised
        regions = measure.label(mask > 0)
        inside = regions > 0
        normal += np.bincount(counts[~inside], minlength=n_bins)
        areas = np.bincount(regions[inside])
        region_mass += np.bincount(counts[inside], weights=1.0 / areas[regions[inside]], minlength=n_bins)
        n_regions += int(np.count_nonzero(areas))
    if n_regions == 0 or normal.sum() == 0:
        return None
    pro = np.cumsum(region_mass[::-1])[::-1][1:] / n_regions
    fpr = np.cumsum(normal[::-1])[::-1][1:] / normal.sum()
    return pro, fpr


def aupro(
    masks: ArrayLike,
    maps: ArrayLike,
    flavour: Literal["reference", "standard"] = "reference",
    *,
    max_fpr: float = 0.3,
    n_thresholds: int = 200,
) -> float | None:
    """Area under the per-region-overlap (PRO) curve up to FPR `max_fpr`, in one of two flavours.

    PRO at a threshold is the mean, over every 8-connected anomalous region of every mask, of the
    fraction of its pixels above the threshold; FPR is the fraction of all normal pixels (pooled) above it.

    "reference" reproduces the AnomalyCLIP evaluation code, which the published numbers use:
    `n_thresholds` equally spaced thresholds from the global map minimum up to (not including) the
    maximum, keep those with FPR < `max_fpr`, rescale the kept FPRs to [0, 1] by their own min and max,
    and integrate with the trapezoid rule. The rescaling stretches whatever FPR range the coarse grid
    reaches, so it is not exactly the area up to `max_fpr`; it is None where that range is empty or a
    single point (the reference divides 0 by 0 there, e.g. for binary maps).

    "standard" is the usual definition (MVTec AD): the exact PRO-FPR curve over every distinct map value,
    linearly interpolated at FPR = `max_fpr`, integrated over [0, `max_fpr`] and divided by `max_fpr`.

    Both return None when no mask has an anomalous pixel, or no pixel is normal.
    """
    masks, maps = np.asarray(masks), np.asarray(maps)
    if flavour == "reference":
        low, high = maps.min(), maps.max()
        if low == high:
            return None
        thresholds = np.arange(low, high, (high - low) / n_thresholds)  # same expression as the reference
        exceeded = (np.searchsorted(thresholds, amap, side="left") for amap in maps)
        curve = _pro_fpr_curve(masks, exceeded, len(thresholds))
    elif flavour == "standard":
        # Thresholds: -inf (every pixel positive) then every distinct value; a pixel with the r-th
        # smallest value (from 0) is above -inf and the r values below it.
        values, rank = np.unique(maps, return_inverse=True)
        curve = _pro_fpr_curve(masks, rank.reshape(maps.shape) + 1, len(values) + 1)
    else:
        raise ValueError(f"unknown AUPRO flavour {flavour!r}: use 'reference' or 'standard'")
    return None if curve is None else aupro_from_curve(*curve, flavour, max_fpr=max_fpr)


def aupro_from_curve(pro: np.ndarray, fpr: np.ndarray, flavour: Literal["reference", "standard"],
                     *, max_fpr: float = 0.3) -> float | None:
    """The area step of `aupro`, for PRO and FPR at ascending thresholds (however they were counted).

    "standard" expects the curve to run from (1, 1) at the lowest threshold to (0, 0) above the maximum.
    """
    if flavour == "reference":
        keep = fpr < max_fpr
        pro, fpr = pro[keep], fpr[keep]
        if len(np.unique(fpr)) < 2:
            return None
        return float(auc((fpr - fpr.min()) / (fpr.max() - fpr.min()), pro))

    pro, fpr = pro[::-1], fpr[::-1]  # ascending FPR, from (0, 0) at the maximum to (1, 1)
    end = int(np.searchsorted(fpr, max_fpr, side="right"))  # fpr[end - 1] <= max_fpr < fpr[end]
    pro_at_max = np.interp(max_fpr, fpr[end - 1 : end + 1], pro[end - 1 : end + 1])
    return float(auc(np.append(fpr[:end], max_fpr), np.append(pro[:end], pro_at_max)) / max_fpr)
