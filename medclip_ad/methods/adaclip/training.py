"""AdaCLIP training on auxiliary data: only the prompters, generators and projections learn; CLIP is frozen.

Defaults are the published recipe (AdamW lr 0.01, betas (0.5, 0.999), weight decay 0.01, 5 epochs,
518 px, seed 111, feature layers 6 12 18 24; batch 1 as the reference, though any batch size works).
Loss: focal on the image probabilities, plus per feature layer focal + dice(abnormal, mask) +
dice(normal, 1 - mask), all with weight 1. Anomalous images without a mask train the image term only.
The data path is the same as AnomalyCLIP's, and so is the loop (`medclip_ad.training.loop`); the last
epoch is also `adaclip.safetensors`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.mosaic import MosaicDataset, mosaic_groups
from medclip_ad.errors import UserInputError
from medclip_ad.methods.adaclip.checkpoint import METHOD, save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import AdaCLIP, AdaCLIPTrainingOutput
from medclip_ad.methods.adaclip.recipe import FINAL_CHECKPOINT, AdaCLIPTrainingConfig
from medclip_ad.methods.checkpoint import MethodCheckpoint, load_method_checkpoint, load_module_weights
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.training.data import ImageTraining
from medclip_ad.training.loop import TrainingRun, loop_settings, train
from medclip_ad.training.losses import focal_loss, local_loss

def adaclip_loss(output: AdaCLIPTrainingOutput, labels: torch.Tensor, masks: torch.Tensor | None,
                 valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image focal term plus the local terms of every layer on the images with a true mask (`valid`)."""
    probabilities = output.image_logits.float().softmax(dim=-1)
    image_term = focal_loss(probabilities[:, :, None, None], labels.float()[:, None, None])
    if masks is None or not bool(valid.any()):
        return {"total": image_term, "image": image_term, "local": image_term.new_zeros(())}
    local_term = sum(local_loss(maps[valid].float(), masks[valid].float()) for maps in output.layer_probability_maps)
    return {"total": image_term + local_term, "image": image_term, "local": local_term}


class AdaCLIPTraining(ImageTraining):
    """The loop's view of AdaCLIP: its learned weights learn, one focal + local loss per batch.

    `detector.layers` is not used: AdaCLIP's feature layers are part of its recipe (`config.feature_layers`).
    """

    final_checkpoint = FINAL_CHECKPOINT
    loss_parts = ("image", "local")

    def __init__(self, detector: DetectorConfig, manifests: list[Manifest], config: AdaCLIPTrainingConfig) -> None:
        super().__init__(detector, manifests, config)
        self.loss_mode = "image and local" if self.use_masks else "image only (no masks)"
        try:
            self.model = AdaCLIP(TextEncoder(self.backbone.model), self.backbone.model, detector.image_size,
                                 layers=config.feature_layers, object_word=config.object_word).to(self.device).train()
        except ValueError as error:
            raise UserInputError(f"--layers/--image-size: {error}") from error
        self.module = self.model.weights
        self.mosaics = MosaicDataset(super().dataset(), mosaic_groups(self.samples), config.mosaic_probability,
                                     config.seed)

    def dataset(self) -> MosaicDataset:
        """The samples, some tiled four to a mosaic as the reference does (drawn per epoch and image)."""
        return self.mosaics

    def start_epoch(self, epoch: int) -> None:
        self.mosaics.set_epoch(epoch)

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.module.parameters(), lr=self.config.learning_rate, betas=self.config.betas,
                                 weight_decay=self.config.weight_decay)

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device)
        labels = batch["label"].to(self.device)
        output = self.model(images)
        valid = (batch["has_mask"] | (batch["label"] == 0)).to(self.device)
        masks = batch["mask"].to(self.device) if self.use_masks else None
        return adaclip_loss(output, labels, masks, valid)

    def save(self, path: Path, optimizer: torch.optim.Optimizer, metadata: dict[str, object]) -> None:
        save_adaclip_checkpoint(path, self.model, metadata, optimizer)

    def load(self, path: Path) -> MethodCheckpoint:
        """The weights of an adaclip checkpoint trained with this run's feature layers and object word."""
        checkpoint = load_method_checkpoint(path, METHOD)
        recorded = {"feature layers": (list(checkpoint.metadata.get("feature_layers", [])), list(self.model.layers)),
                    "object word": (checkpoint.metadata.get("object_word"), self.model.text_encoder.object_word)}
        for what, (theirs, ours) in recorded.items():
            if theirs != ours:
                raise UserInputError(f"{path}: trained with {what} {theirs}, but this run asks for {ours}")
        load_module_weights(checkpoint, self.module)
        return checkpoint

    def provenance(self) -> dict[str, object]:
        return self.image_provenance(METHOD)


def train_adaclip(detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                  config: AdaCLIPTrainingConfig = AdaCLIPTrainingConfig(), resume: Path | None = None,
                  show_progress: bool = True) -> TrainingRun:
    """Train AdaCLIP on the test splits of `manifests`; every epoch writes a resumable checkpoint."""
    return train(AdaCLIPTraining(detector, manifests, config), loop_settings(config), Path(out_dir), resume=resume,
                 show_progress=show_progress)
