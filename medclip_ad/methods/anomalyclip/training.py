"""Glocal prompt training: only the prompt learner learns; CLIP is frozen and sees no gradient.

Defaults are the published recipe (Adam 1e-3, betas (0.5, 0.999), batch 8, 15 epochs, 518 px, layer 24,
seed 111, last epoch kept). Every epoch writes a resumable checkpoint with full provenance; a resumed
run continues with the same data order it would have had, because each epoch's shuffle is seeded by
(seed, epoch). A data-parallel run (`medclip_ad.training.distributed`) runs this same loop in every rank, as one
`TrainingProcess` each.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from medclip_ad.config import DetectorConfig, TrainingConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import (
    SampleDataset,
    manifest_samples,
    samples_per_dataset,
    warn_unmasked_anomalies,
)
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import resolve_device
from medclip_ad.io.writers import atomic_write
from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
from medclip_ad.methods.checkpoint import (
    check_resume_recipe,
    learner_tensors,
    load_into_learner,
    load_prompt_checkpoint,
    optimizer_tensors,
    restore_optimizer_state,
    save_prompt_checkpoint,
)
from medclip_ad.methods.registry import load_backbone, new_prompt_learner
from medclip_ad.modeling.clip_backbone import ClipBackbone
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.training.losses import glocal_loss

FINAL_CHECKPOINT = "prompts.safetensors"
LOG_FILE = "train_log.csv"


@dataclass
class TrainingRun:
    """What a finished run leaves behind."""

    final_checkpoint: Path
    epoch_losses: list[float] = field(default_factory=list)
    loss_mode: str = "glocal"


class TrainingProcess(Protocol):
    """What differs between training alone and training as one rank of a data-parallel run."""

    is_main: bool  # the one process that logs, prints and writes checkpoints

    def loader(self, dataset: Dataset, config: TrainingConfig, epoch: int) -> DataLoader:
        """This process's batches of an epoch."""

    def text_source(self, learner: nn.Module) -> nn.Module:
        """The module the detector calls for text features (the learner, or a wrapper that syncs gradients)."""

    def mean(self, parts: dict[str, float]) -> dict[str, float]:
        """A step's loss parts averaged over all processes, for the log."""


class SingleProcess:
    """Training in this process alone: whole batches in the epoch's seeded order."""

    is_main = True

    def loader(self, dataset: Dataset, config: TrainingConfig, epoch: int) -> DataLoader:
        return DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=config.workers,
                          generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))

    def text_source(self, learner: nn.Module) -> nn.Module:
        return learner

    def mean(self, parts: dict[str, float]) -> dict[str, float]:
        return parts


def train_prompts(detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                  config: TrainingConfig = TrainingConfig(), resume: Path | None = None,
                  show_progress: bool = True) -> TrainingRun:
    """Train prompts on the test splits of `manifests` (the published protocol) and write checkpoints."""
    return train_prompts_as(SingleProcess(), detector, manifests, out_dir, config, resume, show_progress)


def train_prompts_as(process: TrainingProcess, detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                     config: TrainingConfig = TrainingConfig(), resume: Path | None = None,
                     show_progress: bool = True) -> TrainingRun:
    """`train_prompts` as one `process` of a run: alone, or one rank of a data-parallel run."""
    samples = manifest_samples(manifests)
    if not samples:
        raise UserInputError("training data: the manifests list no images")
    labels = {int(sample.entry.anomaly) for sample in samples}
    if labels != {0, 1}:
        raise UserInputError("training data: needs both normal and anomalous images "
                             f"(found only label {labels.pop() if labels else 'none'})")
    use_masks = not config.image_labels_only and any(sample.entry.has_mask for sample in samples)
    loss_mode = "glocal" if use_masks else "global only (no masks)"
    if use_masks:
        warn_unmasked_anomalies(samples)
    device = resolve_device(detector.device)

    torch.manual_seed(config.seed)
    backbone = load_backbone(detector)
    text_encoder = TextEncoder(backbone.model)
    learner = new_prompt_learner(text_encoder)
    model = AnomalyCLIP(text_encoder, DPAMVisionEncoder(backbone.model, detector.image_size, detector.layers),
                        learner).to(device)
    optimizer = torch.optim.Adam(learner.parameters(), lr=config.learning_rate, betas=config.betas)
    provenance = _provenance(detector, backbone, samples, config, loss_mode)
    start_epoch = _resume(resume, learner, optimizer, provenance) if resume else 0
    if start_epoch >= config.epochs:
        raise UserInputError(f"{resume}: already trained {start_epoch} epochs of {config.epochs}; "
                             f"raise --epochs to continue")
    model.text_source = process.text_source(learner)

    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = SampleDataset(samples, detector.image_size)
    run = TrainingRun(out_dir / FINAL_CHECKPOINT, loss_mode=loss_mode)
    if process.is_main:
        print(f"training {sum(p.numel() for p in learner.parameters())} prompt values on {len(samples)} images "
              f"({loss_mode}), epochs {start_epoch + 1}..{config.epochs}, device {device}", file=sys.stderr)
    # Only the main process keeps the log; the others write theirs to nowhere.
    with open(out_dir / LOG_FILE if process.is_main else os.devnull, "a", newline="") as log_handle:
        log = csv.writer(log_handle)
        if log_handle.tell() == 0:
            log.writerow(["epoch", "step", "loss", "global_loss", "local_loss"])
        for epoch in range(start_epoch, config.epochs):
            totals = []
            for step, batch in enumerate(tqdm(process.loader(dataset, config, epoch),
                                              desc=f"epoch {epoch + 1}/{config.epochs}",
                                              disable=not (show_progress and process.is_main), leave=False)):
                parts = process.mean(_training_step(model, optimizer, batch, device, use_masks, config.local_weight))
                totals.append(parts["total"])
                log.writerow([epoch + 1, step, *(f"{parts[key]:.6f}" for key in ("total", "global", "local"))])
            log_handle.flush()
            run.epoch_losses.append(sum(totals) / len(totals))
            checkpoint = out_dir / f"epoch_{epoch + 1:03d}.safetensors"
            if process.is_main:
                _save(checkpoint, learner, optimizer, {**provenance, "epoch": epoch + 1})
                print(f"epoch {epoch + 1}/{config.epochs}: mean loss {run.epoch_losses[-1]:.4f} -> {checkpoint}",
                      file=sys.stderr)
    if process.is_main:
        with atomic_write(run.final_checkpoint) as temporary:
            shutil.copyfile(checkpoint, temporary)
    return run


def _training_step(model: AnomalyCLIP, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device,
                   use_masks: bool, local_weight: float) -> dict[str, float]:
    images = batch["image"].to(device)
    labels = batch["label"].to(device)
    output = model(images)  # CLIP is frozen, so autograd records only the text side
    # As in the reference, every image enters the local term; one without a mask file has an all-zero mask.
    masks = batch["mask"].to(device) if use_masks else None
    parts = glocal_loss(output.image_logits, labels, output.probability_maps if use_masks else [], masks, local_weight)
    optimizer.zero_grad(set_to_none=True)
    parts["total"].backward()
    optimizer.step()
    return {key: float(value.detach()) for key, value in parts.items()}


def recipe_json(config: object) -> dict[str, object]:
    """A recipe dataclass as provenance metadata (tuples become lists, as JSON has them)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def _provenance(detector: DetectorConfig, backbone: ClipBackbone, samples: list, config: TrainingConfig,
                loss_mode: str) -> dict[str, object]:
    return {"method": "anomalyclip", "backbone": backbone.architecture, "clip_weights": backbone.source,
            "layers": list(detector.layers), "image_size": detector.image_size,
            "training_data": samples_per_dataset(samples), "epochs": config.epochs, "seed": config.seed,
            "recipe": recipe_json(config), "loss_mode": loss_mode, "activation": backbone.activation}


def _save(path: Path, learner, optimizer: torch.optim.Optimizer, metadata: dict[str, object]) -> None:
    tensors = learner_tensors(learner)
    metadata = {**metadata, "n_ctx": learner.n_ctx, "depth": 1 + len(learner.deep_prompts),
                "t_n_ctx": learner.deep_prompts[0].shape[0] if len(learner.deep_prompts) else 0}
    tensors.update(optimizer_tensors(learner, optimizer))
    save_prompt_checkpoint(path, tensors, metadata)


def _resume(path: Path, learner, optimizer: torch.optim.Optimizer, provenance: dict[str, object]) -> int:
    """Restore prompts and Adam moments from an epoch checkpoint of the same recipe; returns the epochs done."""
    checkpoint = load_prompt_checkpoint(path)
    if "epoch" not in checkpoint.metadata:
        raise UserInputError(f"{path}: not a training checkpoint (no epoch recorded); "
                             f"resume from an epoch_NNN.safetensors")
    epoch = int(checkpoint.metadata["epoch"])
    if epoch < int(provenance["epochs"]):  # a finished run is refused by the caller, for that reason
        check_resume_recipe(checkpoint, provenance)
    load_into_learner(checkpoint, learner)
    restore_optimizer_state(checkpoint, learner, optimizer)
    return epoch
