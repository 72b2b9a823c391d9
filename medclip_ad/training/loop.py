"""The one training loop every trained method runs: seeded data order, per-epoch checkpoints, exact resume.

A method supplies a `MethodTraining`: what learns (`module`), its optimiser, its data and one step's loss;
the loop owns everything else. Each epoch's order is `randperm` seeded by (seed, epoch), so a resumed
run sees the batches a straight run would have seen; every epoch writes `epoch_NNN.safetensors` with the
optimiser's moments and the loss history, and the last epoch is copied to the method's final file.

Data-parallel runs (torchrun, `medclip_ad.training.distributed`) run this same loop in every process:
global batch k is the single-process batch k, dealt out position by position, and each process's
gradient is weighed by its share of the batch before the sum, so a step is the single-process step
wherever the loss is a mean over images (up to float rounding). The main process alone logs and writes.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from medclip_ad.errors import UserInputError
from medclip_ad.io.atomic import atomic_write
from medclip_ad.methods.checkpoint import MethodCheckpoint, check_resume_recipe, restore_optimizer_state
from medclip_ad.modeling.clip_backbone import ClipBackbone

if TYPE_CHECKING:
    from medclip_ad.training.validation import Validation

LOG_FILE = "train_log.csv"
BEST_CHECKPOINT = "best.safetensors"
EPOCH_CHECKPOINT = "epoch_{epoch:03d}.safetensors"


@dataclass(frozen=True)
class LoopSettings:
    """The part of every recipe the loop itself uses."""

    epochs: int
    batch_size: int
    seed: int
    workers: int = 0


def loop_settings(recipe: object) -> LoopSettings:
    """The loop's part of a method's recipe dataclass."""
    return LoopSettings(recipe.epochs, recipe.batch_size, recipe.seed, recipe.workers)


@dataclass
class TrainingRun:
    """What a finished run leaves behind: the final checkpoint, this run's epoch losses, the best epoch."""

    final_checkpoint: Path
    epoch_losses: list[float] = field(default_factory=list)
    loss_mode: str = ""
    best_checkpoint: Path | None = None
    validation_scores: list[float | None] = field(default_factory=list)


class MethodTraining(Protocol):
    """What a trained method gives the loop (built by its `methods/<name>/training.py`)."""

    module: nn.Module  # everything that learns: what the optimiser, the gradient sum and the checkpoint see
    backbone: ClipBackbone  # the frozen CLIP it trains on (validation loads each epoch onto it)
    final_checkpoint: str  # file name of the copy of the last epoch
    loss_parts: tuple[str, ...]  # keys of `step`'s result besides "total", logged as `<part>_loss`
    loss_mode: str  # a few words on what the loss trains, for the start line and the run

    def dataset(self) -> Dataset:
        """The training items; the loop batches them with the default collate."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based), e.g. to redraw per-epoch augmentations from the seed."""

    def optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimiser over `module`'s parameters, with the recipe's settings."""

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One batch's loss parts, each the mean over the batch; "total" is what is minimised."""

    def save(self, path: Path, optimizer: torch.optim.Optimizer, metadata: dict[str, object]) -> None:
        """Write `module` (and the optimiser's moments) as a method checkpoint with `metadata` added."""

    def load(self, path: Path) -> MethodCheckpoint:
        """Copy a checkpoint's weights into `module` (refusing one that does not fit); return it."""

    def provenance(self) -> dict[str, object]:
        """Metadata every checkpoint of the run carries (method, backbone, data, recipe)."""


class TrainingProcess(Protocol):
    """Training alone, or as one rank of a data-parallel run."""

    rank: int
    world_size: int
    is_main: bool  # the one process that logs, prints and writes checkpoints

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of `values` over all processes (float64, on the CPU)."""


class SingleProcess:
    """Training in this process alone."""

    rank = 0
    world_size = 1
    is_main = True

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values


def check_run_folder(out_dir: Path, overwrite: bool, resume: Path | None, final_checkpoint: str,
                     process: TrainingProcess = SingleProcess()) -> None:
    """Refuse to train into a folder that holds an earlier run, unless asked to replace or continue it.

    In a data-parallel run this is also the point every process passes before the main one writes, so
    all of them judge the folder as it was.
    """
    earlier = _run_files(Path(out_dir), final_checkpoint)
    refused = bool(earlier) and not overwrite and resume is None
    if process.world_size > 1:
        refused = bool(process.all_sum(torch.tensor([float(refused)], dtype=torch.float64)).item())
    if refused:
        found = f" ({earlier[0].name})" if earlier else ""
        raise UserInputError(f"{out_dir}: already holds a training run{found}; pass --overwrite to replace it or "
                             f"--resume to continue it")


def train(method: MethodTraining, settings: LoopSettings, out_dir: Path, *, resume: Path | None = None,
          init: Path | None = None, validation: Validation | None = None, overwrite: bool = False,
          process: TrainingProcess = SingleProcess(), show_progress: bool = True) -> TrainingRun:
    """Train `method` for `settings.epochs` into `out_dir`; `resume` continues an epoch checkpoint exactly,
    `init` starts from another checkpoint's weights (fresh optimiser, epoch 1)."""
    if settings.epochs < 1 or settings.batch_size < 1:
        raise UserInputError(f"--epochs {settings.epochs} / --batch-size {settings.batch_size}: both must be at "
                             f"least 1")
    if resume and init:
        raise UserInputError("--init: not with --resume (a resumed run already has its weights)")
    out_dir = Path(out_dir)
    check_run_folder(out_dir, overwrite, resume, method.final_checkpoint, process)
    optimizer = method.optimizer()
    run = TrainingRun(out_dir / method.final_checkpoint, loss_mode=method.loss_mode)
    history: list[float] = []
    start_epoch = 0
    provenance = method.provenance()
    if resume:
        start_epoch, history = _resume(method, optimizer, resume, settings.epochs, provenance)
    elif init:
        method.load(init)
    dataset = method.dataset()
    if len(dataset) == 0:
        raise UserInputError("training data: nothing to train on")
    if process.is_main:
        if overwrite and not resume:
            for earlier in _run_files(out_dir, method.final_checkpoint):
                earlier.unlink()
        out_dir.mkdir(parents=True, exist_ok=True)
        values = sum(parameter.numel() for parameter in method.module.parameters() if parameter.requires_grad)
        print(f"training {values} values of {provenance.get('method')} on {len(dataset)} items ({method.loss_mode}), "
              f"epochs {start_epoch + 1}..{settings.epochs}", file=sys.stderr)
    parameters = [parameter for parameter in method.module.parameters() if parameter.requires_grad]
    checkpoint = out_dir / EPOCH_CHECKPOINT.format(epoch=start_epoch)
    # Only the main process keeps the log; the others write theirs to nowhere.
    with open(out_dir / LOG_FILE if process.is_main else os.devnull, "a", newline="") as log_handle:
        log = csv.writer(log_handle)
        if log_handle.tell() == 0:
            log.writerow(["epoch", "step", "loss", *(f"{part}_loss" for part in method.loss_parts)])
        for epoch in range(start_epoch, settings.epochs):
            method.start_epoch(epoch)
            totals = []
            batches = _epoch_batches(len(dataset), settings, epoch)
            shares = [batch[process.rank::process.world_size] for batch in batches]
            loader = iter(DataLoader(dataset, batch_sampler=[share for share in shares if share],
                                     num_workers=settings.workers))
            steps = tqdm(zip(batches, shares), total=len(batches), desc=f"epoch {epoch + 1}/{settings.epochs}",
                         disable=not (show_progress and process.is_main), leave=False)
            for step, (batch, share) in enumerate(steps):
                parts = _step(method, optimizer, parameters, next(loader) if share else None,
                              len(share) / len(batch), process)
                totals.append(parts["total"])
                log.writerow([epoch + 1, step, *(f"{parts[key]:.6f}" for key in ("total", *method.loss_parts))])
            log_handle.flush()
            run.epoch_losses.append(sum(totals) / len(totals))
            history.append(run.epoch_losses[-1])
            checkpoint = out_dir / EPOCH_CHECKPOINT.format(epoch=epoch + 1)
            metadata = {**provenance, "epoch": epoch + 1, "epoch_losses": [round(loss, 6) for loss in history]}
            if process.is_main:
                method.save(checkpoint, optimizer, metadata)
                line = f"epoch {epoch + 1}/{settings.epochs}: mean loss {run.epoch_losses[-1]:.4f}"
                if validation is not None:
                    score = validation.score(checkpoint)
                    run.validation_scores.append(score)
                    line += f", {validation.describe(score)}"
                    if validation.is_best(score):
                        with atomic_write(out_dir / BEST_CHECKPOINT) as temporary:
                            shutil.copyfile(checkpoint, temporary)
                        run.best_checkpoint = out_dir / BEST_CHECKPOINT
                print(f"{line} -> {checkpoint}", file=sys.stderr)
    if process.is_main:
        with atomic_write(run.final_checkpoint) as temporary:
            shutil.copyfile(checkpoint, temporary)
    return run


def _epoch_batches(size: int, settings: LoopSettings, epoch: int) -> list[list[int]]:
    """The epoch's batches of item indices, in the order seeded by (seed, epoch)."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(settings.seed * 1000 + epoch)).tolist()
    return [order[start:start + settings.batch_size] for start in range(0, size, settings.batch_size)]


def _step(method: MethodTraining, optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter],
          batch: dict | None, weight: float, process: TrainingProcess) -> dict[str, float]:
    """One optimiser step on this process's share (`weight` of the global batch; None: an empty share)."""
    names = ("total", *method.loss_parts)
    optimizer.zero_grad(set_to_none=True)
    if batch is not None:
        parts = method.step(batch)
        parts["total"].backward()
        values = [float(parts[name].detach()) for name in names]
    else:
        values = [0.0] * len(names)
    if process.world_size > 1:
        values = _sum_gradients(parameters, values, weight, process)
    optimizer.step()
    return dict(zip(names, values))


def _sum_gradients(parameters: list[nn.Parameter], values: list[float], weight: float,
                   process: TrainingProcess) -> list[float]:
    """Replace each process's gradients and loss parts by their share-weighted sum over all processes (one call)."""
    present = torch.tensor([float(parameter.grad is not None) for parameter in parameters], dtype=torch.float64)
    gradients = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).double().cpu()
                 for p in parameters]
    combined = process.all_sum(torch.cat([present, weight * torch.tensor(values, dtype=torch.float64),
                                          weight * torch.cat(gradients)]))
    present, summed_values = combined[:len(parameters)], combined[len(parameters):len(parameters) + len(values)]
    offset = len(parameters) + len(values)
    for parameter, used in zip(parameters, present):
        count = parameter.numel()
        gradient = combined[offset:offset + count].reshape(parameter.shape)
        parameter.grad = gradient.to(parameter.device, parameter.dtype) if used > 0 else None
        offset += count
    return summed_values.tolist()


def _resume(method: MethodTraining, optimizer: torch.optim.Optimizer, path: Path, epochs: int,
            provenance: dict[str, object]) -> tuple[int, list]:
    """Weights, optimiser moments and loss history from an epoch checkpoint of the same recipe (weights,
    layers, image size, data, optimisation: `check_resume_recipe`); returns (epochs done, history)."""
    checkpoint = method.load(path)
    if "epoch" not in checkpoint.metadata:
        raise UserInputError(f"{path}: not a training checkpoint (no epoch recorded); "
                             f"resume from an epoch_NNN.safetensors")
    done = int(checkpoint.metadata["epoch"])
    if done >= epochs:
        raise UserInputError(f"{path}: already trained {done} epochs of {epochs}; raise --epochs to continue")
    check_resume_recipe(checkpoint, provenance)
    restore_optimizer_state(checkpoint, method.module, optimizer)
    return done, [float(loss) for loss in checkpoint.metadata.get("epoch_losses", [])]


def _run_files(out_dir: Path, final_checkpoint: str) -> list[Path]:
    """The files an earlier run of the loop left in `out_dir`."""
    if not out_dir.is_dir():
        return []
    named = [out_dir / name for name in (final_checkpoint, BEST_CHECKPOINT, LOG_FILE)]
    return sorted(out_dir.glob("epoch_[0-9][0-9][0-9].safetensors")) + [path for path in named if path.exists()]
