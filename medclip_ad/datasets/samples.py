"""Manifest entries as model-ready samples, for training and evaluation alike.

Images go through the same reader, 8-bit mapping and preprocessing as `infer`, so a model is trained
and evaluated on exactly what it will see in use. Masks: any value > 0 is anomalous; as an 8-bit {0, 255}
image they are resized to the model size with PIL's bilinear filter (antialiased along a shrinking
axis) and thresholded at > 0.5, exactly as the reference's training data was: a resize without
antialiasing binarises edge pixels of masks larger than the model size differently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from medclip_ad.datasets.manifest import Manifest, ManifestEntry
from medclip_ad.datasets.notices import warn_dataset
from medclip_ad.errors import UserInputError
from medclip_ad.inference.preprocessing import preprocess
from medclip_ad.io.discovery import CaseSource
from medclip_ad.io.intensity import IntensityMapping
from medclip_ad.io.readers import read_case


@dataclass(frozen=True)
class Sample:
    """One entry with absolute paths, and the manifest it came from (for per-dataset reporting)."""

    entry: ManifestEntry
    dataset: str


def manifest_samples(manifests: list[Manifest], split: str = "test", kind: str = "image") -> list[Sample]:
    """All entries of a split of several manifests, with absolute paths; each must be of `kind`.

    Training and 2-D evaluation take images; volume evaluation takes volumes.
    """
    samples = []
    for manifest in manifests:
        for entry in manifest.entries(split):
            if entry.kind != kind:
                raise UserInputError(f"{entry.img_path}: a {entry.kind} entry where {kind}s are expected "
                                     f"(volume manifests are for evaluation; training takes 2-D images)")
            samples.append(Sample(manifest.absolute(entry), manifest.dataset or "dataset"))
    return samples


def samples_per_dataset(samples: list[Sample]) -> dict[str, int]:
    """How many samples each dataset contributes, in first-seen order: the `training_data` of provenance."""
    return dict(Counter(sample.dataset for sample in samples))


def warn_unmasked_anomalies(samples: list[Sample]) -> None:
    """Say when anomalous training images lack masks: the local loss takes them as all-normal, as the reference does."""
    count = sum(1 for sample in samples if sample.entry.anomaly and not sample.entry.has_mask)
    if count:
        warn_dataset(f"{count} anomalous training image(s) have no mask; like the reference, the local loss takes "
                     f"them with an all-zero mask (no anomalous pixel); pass --image-labels-only to train the "
                     f"image loss alone")


def read_display_image(path: Path) -> np.ndarray:
    """An image file as the 8-bit array the model sees (8-bit unchanged, 16-bit by robust percentiles)."""
    scan = read_case(CaseSource(name=path.stem, kind="image", paths=(path,), input=path))
    return IntensityMapping.from_scan(scan)(scan.array)


def read_mask(path: str, size: int) -> torch.Tensor:
    """A binary (size, size) float mask; an empty path means a normal image (all zeros)."""
    if not path:
        return torch.zeros(size, size)
    array = read_display_image(Path(path))
    binary = ((array.max(axis=-1) if array.ndim == 3 else array) > 0).astype(np.uint8) * 255
    resized = Image.fromarray(binary).resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0 > 0.5).float()


class SampleDataset(Dataset):
    """Samples -> dicts with `image` (3, S, S) normalised, `mask` (S, S), `label`, `has_mask`, `index`."""

    def __init__(self, samples: list[Sample], image_size: int) -> None:
        self.samples = samples
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        entry = self.samples[index].entry
        image = preprocess([read_display_image(Path(entry.img_path))], self.image_size)[0]
        return {"image": image, "mask": read_mask(entry.mask_path, self.image_size),
                "label": torch.tensor(int(entry.anomaly)), "has_mask": torch.tensor(entry.has_mask),
                "index": torch.tensor(index)}
