"""AdaCLIP training on auxiliary data: only the prompters, generators and projections learn; CLIP is frozen.

Defaults are the published recipe (AdamW lr 0.01, betas (0.5, 0.999), weight decay 0.01, 5 epochs,
518 px, seed 111, feature layers 6 12 18 24; batch 1 as the reference, though any batch size works).
Loss: focal on the image probabilities, plus per feature layer focal + dice(abnormal, mask) +
dice(normal, 1 - mask), all with weight 1. Anomalous images without a mask train the image term only.
The data path is the same as AnomalyCLIP's: the test splits of prepared manifests. As there, every epoch
writes `epoch_NNN.safetensors` with AdamW's moments, and a resumed run continues exactly as a straight
one (each epoch's shuffle is seeded by (seed, epoch)); the last epoch is also `adaclip.safetensors`.
"""

from __future__ import annotations

import csv
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from medclip_ad.config import AdaCLIPTrainingConfig, DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.mosaic import MosaicDataset, mosaic_groups
from medclip_ad.datasets.samples import SampleDataset, manifest_samples, samples_per_dataset
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import resolve_device
from medclip_ad.io.writers import atomic_write
from medclip_ad.methods.adaclip.checkpoint import METHOD, save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import AdaCLIP, AdaCLIPOutput
from medclip_ad.methods.anomalyclip.training import LOG_FILE, recipe_json
from medclip_ad.methods.checkpoint import check_resume_recipe, load_method_checkpoint, restore_optimizer_state
from medclip_ad.methods.registry import load_backbone
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.training.losses import focal_loss, local_loss

FINAL_CHECKPOINT = "adaclip.safetensors"


@dataclass
class AdaCLIPTrainingRun:
    """What a finished run leaves behind: the checkpoint and the mean loss of each epoch."""

    final_checkpoint: Path
    epoch_losses: list[float] = field(default_factory=list)


def adaclip_loss(output: AdaCLIPOutput, labels: torch.Tensor, masks: torch.Tensor | None,
                 valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image focal term plus the local terms of every layer on the images with a true mask (`valid`)."""
    probabilities = output.image_logits.float().softmax(dim=-1)
    image_term = focal_loss(probabilities[:, :, None, None], labels.float()[:, None, None])
    if masks is None or not bool(valid.any()):
        return {"total": image_term, "image": image_term, "local": image_term.new_zeros(())}
    local_term = sum(local_loss(maps[valid].float(), masks[valid].float()) for maps in output.layer_probability_maps)
    return {"total": image_term + local_term, "image": image_term, "local": local_term}


def train_adaclip(detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                  config: AdaCLIPTrainingConfig = AdaCLIPTrainingConfig(), resume: Path | None = None,
                  show_progress: bool = True) -> AdaCLIPTrainingRun:
    """Train AdaCLIP on the test splits of `manifests`; every epoch writes a resumable checkpoint.

    `detector.layers` is not used: AdaCLIP's feature layers are part of its recipe (`config.feature_layers`).
    """
    if config.epochs < 1 or config.batch_size < 1:
        raise UserInputError(f"--epochs {config.epochs} / --batch-size {config.batch_size}: both must be at least 1")
    samples = manifest_samples(manifests)
    labels = {int(sample.entry.anomaly) for sample in samples}
    if labels != {0, 1}:
        raise UserInputError("training data: needs both normal and anomalous images "
                             f"(found {'only label ' + str(labels.pop()) if labels else 'no images'})")
    device = resolve_device(detector.device)
    torch.manual_seed(config.seed)
    backbone = load_backbone(detector)
    try:
        model = AdaCLIP(TextEncoder(backbone.model), backbone.model, detector.image_size,
                        layers=config.feature_layers, object_word=config.object_word).to(device).train()
    except ValueError as error:
        raise UserInputError(f"--layers/--image-size: {error}") from error
    optimizer = torch.optim.AdamW(model.weights.parameters(), lr=config.learning_rate, betas=config.betas,
                                  weight_decay=config.weight_decay)
    run = AdaCLIPTrainingRun(Path(out_dir) / FINAL_CHECKPOINT)
    provenance = {"backbone": backbone.architecture, "clip_weights": backbone.source,
                  "image_size": detector.image_size, "training_data": samples_per_dataset(samples),
                  "epochs": config.epochs,
                  "seed": config.seed,
                  "recipe": recipe_json(config)}
    start_epoch = _resume(resume, model, optimizer, run, provenance) if resume else 0
    if start_epoch >= config.epochs:
        raise UserInputError(f"{resume}: already trained {start_epoch} epochs of {config.epochs}; "
                             f"raise --epochs to continue")
    dataset = MosaicDataset(SampleDataset(samples, detector.image_size), mosaic_groups(samples),
                            config.mosaic_probability, config.seed)
    use_masks = not config.image_labels_only and any(sample.entry.has_mask for sample in samples)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"training {sum(p.numel() for p in model.weights.parameters())} adaclip values on {len(samples)} images, "
          f"epochs {start_epoch + 1}..{config.epochs}, device {device}", file=sys.stderr)
    with open(out_dir / LOG_FILE, "a" if resume else "w", newline="") as log_handle:
        log = csv.writer(log_handle)
        if log_handle.tell() == 0:
            log.writerow(["epoch", "step", "loss", "image_loss", "local_loss"])
        for epoch in range(start_epoch, config.epochs):
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=config.workers,
                                generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
            totals = []
            for step, batch in enumerate(tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}",
                                              disable=not show_progress, leave=False)):
                parts = _training_step(model, optimizer, batch, device, use_masks)
                totals.append(parts["total"])
                log.writerow([epoch + 1, step, *(f"{parts[key]:.6f}" for key in ("total", "image", "local"))])
            log_handle.flush()
            run.epoch_losses.append(sum(totals) / len(totals))
            checkpoint = out_dir / f"epoch_{epoch + 1:03d}.safetensors"
            save_adaclip_checkpoint(checkpoint, model, {
                **provenance, "epoch": epoch + 1, "epoch_losses": [round(loss, 6) for loss in run.epoch_losses]},
                optimizer)
            print(f"epoch {epoch + 1}/{config.epochs}: mean loss {run.epoch_losses[-1]:.4f} -> {checkpoint}",
                  file=sys.stderr)
    with atomic_write(run.final_checkpoint) as temporary:
        shutil.copyfile(checkpoint, temporary)
    return run


def _resume(path: Path, model: AdaCLIP, optimizer: torch.optim.Optimizer, run: AdaCLIPTrainingRun,
            provenance: dict[str, object]) -> int:
    """Restore the learned weights, AdamW's moments and the loss history of a run with the same recipe;
    returns the epochs already done."""
    checkpoint = load_method_checkpoint(path, METHOD)
    if "epoch" not in checkpoint.metadata:
        raise UserInputError(f"{path}: not a training checkpoint (no epoch recorded); "
                             f"resume from an epoch_NNN.safetensors")
    recorded = {"feature layers": (list(checkpoint.metadata.get("feature_layers", [])), list(model.layers)),
                "object word": (checkpoint.metadata.get("object_word"), model.text_encoder.object_word)}
    for what, (theirs, ours) in recorded.items():
        if theirs != ours:
            raise UserInputError(f"{path}: trained with {what} {theirs}, but this run asks for {ours}")
    if int(checkpoint.metadata["epoch"]) < int(provenance["epochs"]):  # a finished run is refused by the caller
        check_resume_recipe(checkpoint, provenance)
    try:
        model.weights.load_state_dict(checkpoint.tensors)
    except RuntimeError as error:
        raise UserInputError(f"{path}: does not fit this backbone ({str(error).splitlines()[0]})") from error
    restore_optimizer_state(checkpoint, model.weights, optimizer)
    run.epoch_losses = [float(loss) for loss in checkpoint.metadata.get("epoch_losses", [])]
    return int(checkpoint.metadata["epoch"])


def _training_step(model: AdaCLIP, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device,
                   use_masks: bool) -> dict[str, float]:
    images = batch["image"].to(device)
    labels = batch["label"].to(device)
    output = model(images)
    valid = (batch["has_mask"] | (batch["label"] == 0)).to(device)
    masks = batch["mask"].to(device) if use_masks else None
    parts = adaclip_loss(output, labels, masks, valid)
    optimizer.zero_grad(set_to_none=True)
    parts["total"].backward()
    optimizer.step()
    return {key: float(value.detach()) for key, value in parts.items()}
