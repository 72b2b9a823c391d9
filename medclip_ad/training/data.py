"""What every trained method's data and provenance have in common."""

from __future__ import annotations

from dataclasses import asdict

import torch

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import Sample, SampleDataset, manifest_samples, samples_per_dataset
from medclip_ad.devices import resolve_device
from medclip_ad.errors import UserInputError
from medclip_ad.methods.registry import load_backbone
from medclip_ad.modeling.clip_backbone import ClipBackbone


def image_training_samples(manifests: list[Manifest]) -> list[Sample]:
    """The test splits of `manifests` (the published protocol), refused unless both labels occur."""
    samples = manifest_samples(manifests)
    if not samples:
        raise UserInputError("training data: the manifests list no images")
    labels = {int(sample.entry.anomaly) for sample in samples}
    if labels != {0, 1}:
        raise UserInputError("training data: needs both normal and anomalous images "
                             f"(found only label {labels.pop()})")
    return samples


class ImageTraining:
    """The part of a `MethodTraining` shared by methods that train on manifest images with masks.

    Loads the samples and the backbone (after seeding, so a run's initial weights are the seed's); the
    recipe needs `seed` and `image_labels_only`. Subclasses build the model and supply the step.
    """

    def __init__(self, detector: DetectorConfig, manifests: list[Manifest], config: object) -> None:
        self.detector, self.config = detector, config
        self.samples = image_training_samples(manifests)
        self.use_masks = not config.image_labels_only and any(sample.entry.has_mask for sample in self.samples)
        self.device = resolve_device(detector.device)
        torch.manual_seed(config.seed)
        self.backbone = load_backbone(detector)

    def dataset(self) -> SampleDataset:
        return SampleDataset(self.samples, self.detector.image_size)

    def start_epoch(self, epoch: int) -> None:
        """Nothing to redraw per epoch (the loop seeds the order)."""

    def image_provenance(self, method: str) -> dict[str, object]:
        """`training_provenance` of the samples, with the image size."""
        return {**training_provenance(method, self.backbone, samples_per_dataset(self.samples), self.config),
                "image_size": self.detector.image_size}


def recipe_json(config: object) -> dict[str, object]:
    """A recipe dataclass as provenance metadata (tuples become lists, as JSON has them)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def training_provenance(method: str, backbone: ClipBackbone, training_data: dict[str, int],
                        config: object) -> dict[str, object]:
    """The metadata every checkpoint of a run carries: method, backbone, data counts, seed and recipe."""
    return {"method": method, "backbone": backbone.architecture, "clip_weights": backbone.source,
            "training_data": training_data, "epochs": config.epochs, "seed": config.seed,
            "recipe": recipe_json(config)}
