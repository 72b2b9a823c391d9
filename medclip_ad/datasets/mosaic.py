"""Mosaic augmentation for AdaCLIP training: now and then four images of one class become one 2 x 2 image.

The reference trains AdaCLIP with it on MVTec AD (probability 0.2): a tile is a quarter-size image, so
the model sees small anomalies and several objects per image. It wraps any dataset of model-ready items
(an `image` (3, S, S), its `mask` (S, S) and `label`), composed after the usual preprocessing; items of
group None are never tiled. Each item's draw depends only on (seed, epoch, index), so a run repeats
exactly, and a resumed one too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medclip_ad.datasets.samples import Sample

MOSAIC_PROBABILITY = 0.2
MOSAIC_TILES = 4  # a 2 x 2 grid
MOSAIC_DATASETS = ("mvtec",)  # the training sets the reference tiles


def mosaic_groups(samples: Sequence[Sample]) -> list[str | None]:
    """Each sample's mosaic group: its class within a dataset the reference tiles, else None (never tiled)."""
    return [f"{sample.dataset}/{sample.entry.cls_name}" if sample.dataset in MOSAIC_DATASETS else None
            for sample in samples]


class MosaicDataset(Dataset):
    """`base`'s items; with `probability` an item is tiled with three other items of its `groups` entry."""

    def __init__(self, base: Dataset, groups: Sequence[str | None], probability: float = MOSAIC_PROBABILITY,
                 seed: int = 0) -> None:
        if len(groups) != len(base):
            raise ValueError(f"{len(groups)} group names for {len(base)} items")
        self.base = base
        self.groups = list(groups)
        self.probability = probability
        self.seed = seed
        self.epoch = 0
        self._members: dict[str | None, list[int]] = {None: []}
        for index, group in enumerate(self.groups):
            if group is not None:
                self._members.setdefault(group, []).append(index)

    def set_epoch(self, epoch: int) -> None:
        """Draw the mosaics of `epoch` (0-based): another epoch tiles other items."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = np.random.default_rng([self.seed, self.epoch, index])
        others = [member for member in self._members[self.groups[index]] if member != index]
        if len(others) < MOSAIC_TILES - 1 or generator.random() >= self.probability:
            return self.base[index]
        picked = generator.choice(len(others), MOSAIC_TILES - 1, replace=False)
        return mosaic([self.base[index], *(self.base[others[int(i)]] for i in picked)])


def mosaic(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Four items -> one: each image and mask shrunk to half size (antialiased) and laid out row by row.

    The result is anomalous when any tile is; it has a mask when every anomalous tile has one. The
    first item's other fields (its index) are kept.
    """
    if len(items) != MOSAIC_TILES:
        raise ValueError(f"a mosaic takes {MOSAIC_TILES} items, got {len(items)}")
    size = items[0]["image"].shape[-1]
    half = size // 2

    def tiled(key: str) -> torch.Tensor:
        tiles = [item[key].float().reshape(-1, size, size) for item in items]
        small = F.interpolate(torch.stack(tiles), size=(half, half), mode="bilinear", antialias=True,
                              align_corners=False)
        grid = torch.cat([torch.cat([small[0], small[1]], dim=-1), torch.cat([small[2], small[3]], dim=-1)], dim=-2)
        return F.pad(grid, (0, size - 2 * half, 0, size - 2 * half))

    labels = torch.stack([item["label"] for item in items])
    with_mask = [bool(item["has_mask"]) or int(item["label"]) == 0 for item in items]
    result = dict(items[0])
    result.update(image=tiled("image"), mask=(tiled("mask")[0] > 0.5).float(), label=labels.max(),
                  has_mask=torch.tensor(all(with_mask)))
    return result
