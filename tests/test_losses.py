"""Glocal losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from medclip_ad.training.losses import dice_loss, focal_loss, glocal_loss, local_loss


def _two_pixel_case():
    # One image of 1 x 2 pixels: pixel 0 normal, pixel 1 anomalous.
    abnormal = torch.tensor([[[0.2, 0.7]]])
    probabilities = torch.stack([1 - abnormal, abnormal], dim=1)  # (1, 2, 1, 2)
    masks = torch.tensor([[[0.0, 1.0]]])
    return probabilities, masks


def test_focal_loss_matches_hand_computation():
    probabilities, masks = _two_pixel_case()
    # target one-hot clamped to [1e-5, 1 - 1e-5]; p_t = sum(target * p) + 1e-5
    p0 = (1 - 1e-5) * 0.8 + 1e-5 * 0.2 + 1e-5
    p1 = 1e-5 * 0.3 + (1 - 1e-5) * 0.7 + 1e-5
    expected = (-(1 - p0) ** 2 * math.log(p0) - (1 - p1) ** 2 * math.log(p1)) / 2
    assert focal_loss(probabilities, masks).item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_matches_hand_computation():
    probability = torch.tensor([[[0.2, 0.7]]])
    target = torch.tensor([[[0.0, 1.0]]])
    # 1 - (2 * 0.7 + 1) / (0.9 + 1 + 1)
    assert dice_loss(probability, target).item() == pytest.approx(1 - 2.4 / 2.9, rel=1e-6)


def test_dice_loss_averages_over_the_batch():
    probability = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    target = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    # image 0: (2 + 1) / (2 + 1) = 1; image 1: 1 / (2 + 1)
    assert dice_loss(probability, target).item() == pytest.approx(1 - (1 + 1 / 3) / 2, rel=1e-6)


def test_glocal_total_weights_local_by_four_and_sums_layers():
    probabilities, masks = _two_pixel_case()
    logits = torch.tensor([[2.0, 0.5]])
    labels = torch.tensor([1])
    parts = glocal_loss(logits, labels, [probabilities, probabilities], masks)
    ce = -math.log(math.exp(0.5) / (math.exp(2.0) + math.exp(0.5)))
    assert parts["global"].item() == pytest.approx(ce, rel=1e-6)
    assert parts["local"].item() == pytest.approx(2 * local_loss(probabilities, masks).item(), rel=1e-6)
    assert parts["total"].item() == pytest.approx(ce + 4 * parts["local"].item(), rel=1e-6)


def test_image_labels_only_trains_the_global_term():
    parts = glocal_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), [], None)
    assert parts["total"].item() == pytest.approx(math.log(1 + math.e), rel=1e-6)
    assert parts["local"].item() == 0.0


def test_batch_of_one_is_not_squeezed_away():
    probabilities, masks = _two_pixel_case()
    parts = glocal_loss(torch.tensor([1.0, 0.0]), torch.tensor(0), [probabilities], masks[0])
    assert parts["total"].dim() == 0 and torch.isfinite(parts["total"])


def test_perfect_prediction_has_near_zero_local_loss():
    masks = torch.tensor([[[0.0, 1.0]]])
    probabilities = torch.stack([1 - masks, masks], dim=1)
    assert local_loss(probabilities, masks).item() < 1e-4
