"""Mosaic augmentation (AdaCLIP training): layout, labels and masks, seeded draws, per-class grouping."""

from __future__ import annotations

import pytest
import torch
from medclip_ad.datasets.manifest import ManifestEntry
from medclip_ad.datasets.mosaic import MOSAIC_PROBABILITY, MosaicDataset, mosaic, mosaic_groups
from medclip_ad.datasets.samples import Sample
from torch.utils.data import Dataset

SIZE = 8


class Items(Dataset):
    """Item i: a constant image of value i, a mask covering its top-left quarter if anomalous and masked."""

    def __init__(self, count: int, anomalous: set[int] = frozenset(), unmasked: set[int] = frozenset()) -> None:
        self.count, self.anomalous, self.unmasked = count, anomalous, unmasked

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mask = torch.zeros(SIZE, SIZE)
        if index in self.anomalous and index not in self.unmasked:
            mask[:SIZE // 2, :SIZE // 2] = 1
        return {"image": torch.full((3, SIZE, SIZE), float(index)), "mask": mask,
                "label": torch.tensor(int(index in self.anomalous)),
                "has_mask": torch.tensor(index not in self.unmasked), "index": torch.tensor(index)}


def test_four_items_become_one_quarter_each():
    items = Items(4, anomalous={3})
    tiled = mosaic([items[i] for i in range(4)])
    half = SIZE // 2
    assert tiled["image"].shape == (3, SIZE, SIZE) and tiled["mask"].shape == (SIZE, SIZE)
    assert torch.all(tiled["image"][:, :half, :half] == 0) and torch.all(tiled["image"][:, :half, half:] == 1)
    assert torch.all(tiled["image"][:, half:, :half] == 2) and torch.all(tiled["image"][:, half:, half:] == 3)
    expected_mask = torch.zeros(SIZE, SIZE)
    expected_mask[half:half + half // 2, half:half + half // 2] = 1  # item 3's lesion, shrunk into its tile
    assert torch.equal(tiled["mask"], expected_mask)
    assert int(tiled["label"]) == 1 and bool(tiled["has_mask"]) and int(tiled["index"]) == 0
    unmasked = Items(4, anomalous={1}, unmasked={1})
    assert not bool(mosaic([unmasked[i] for i in range(4)])["has_mask"])


def test_draws_are_seeded_per_epoch_and_item_and_stay_within_a_class():
    count = 400
    groups = ["a" if index % 2 else "b" for index in range(count)]
    dataset = MosaicDataset(Items(count), groups, seed=111)

    def tiled_items(epoch: int) -> dict[int, set[int]]:
        dataset.set_epoch(epoch)
        result = {}
        for index in range(count):
            image = dataset[index]["image"][0]
            values = {int(value) for value in image.unique()}
            if values != {index}:
                result[index] = values
        return result

    first, again, other = tiled_items(0), tiled_items(0), tiled_items(1)
    assert first == again and first != other
    assert abs(len(first) / count - MOSAIC_PROBABILITY) < 0.06
    for index, values in first.items():
        assert index in values and len(values) == 4 and len({groups[value] for value in values}) == 1


def test_only_the_datasets_the_reference_tiles_are_grouped():
    def sample(dataset: str, cls_name: str) -> Sample:
        return Sample(ManifestEntry("a.png", "", cls_name, "", 0), dataset)

    groups = mosaic_groups([sample("mvtec", "bottle"), sample("colondb", "colon"), sample("mvtec", "cable")])
    assert groups == ["mvtec/bottle", None, "mvtec/cable"]
    dataset = MosaicDataset(Items(8), [None] * 4 + ["x"] * 4, probability=1.0)
    assert all(torch.equal(dataset[index]["image"], Items(8)[index]["image"]) for index in range(4))
    assert all(len(dataset[index]["image"][0].unique()) == 4 for index in range(4, 8))


def test_small_classes_and_probability_zero_pass_items_through():
    items = Items(6)
    always = MosaicDataset(items, ["x", "x", "x", "y", "y", "y"], probability=1.0)
    assert all(torch.equal(always[index]["image"], items[index]["image"]) for index in range(6))  # < 4 per class
    never = MosaicDataset(Items(8), ["x"] * 8, probability=0.0)
    assert all(torch.equal(never[index]["image"], Items(8)[index]["image"]) for index in range(8))
    with pytest.raises(ValueError, match="group names"):
        MosaicDataset(items, ["x"])
