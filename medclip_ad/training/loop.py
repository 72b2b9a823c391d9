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
TENSORBOARD_FOLDER = "tensorboard"  # beside train_log.csv, with --tensorboard
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


class TrainingSession:
    """One run of the loop, taken step by step: `train` drives it, and so does the bundle's SupervisedTrainer.

    Created ready to run (folder checked, resumed or initialised, data built); `with session:` keeps the
    log open; `epoch_steps`, `step` and `end_epoch` are one epoch; `finish` copies the final checkpoint.
    """

    def __init__(self, method: MethodTraining, settings: LoopSettings, out_dir: Path, *, resume: Path | None = None,
                 init: Path | None = None, validation: Validation | None = None, overwrite: bool = False,
                 process: TrainingProcess = SingleProcess(), tensorboard: bool = False) -> None:
        if tensorboard:
            check_tensorboard()
        if settings.epochs < 1 or settings.batch_size < 1:
            raise UserInputError(f"--epochs {settings.epochs} / --batch-size {settings.batch_size}: both must be at "
                                 f"least 1")
        if resume and init:
            raise UserInputError("--init: not with --resume (a resumed run already has its weights)")
        self.method, self.settings, self.out_dir = method, settings, Path(out_dir)
        self.validation, self.process, self.tensorboard = validation, process, tensorboard
        check_run_folder(self.out_dir, overwrite, resume, method.final_checkpoint, process)
        self.optimizer = method.optimizer()
        self.run = TrainingRun(self.out_dir / method.final_checkpoint, loss_mode=method.loss_mode)
        self.history: list[float] = []
        self.start_epoch = 0
        self.provenance = method.provenance()
        if resume:
            self.start_epoch, self.history = _resume(method, self.optimizer, resume, settings.epochs, self.provenance)
        elif init:
            method.load(init)
        self.dataset = method.dataset()
        if len(self.dataset) == 0:
            raise UserInputError("training data: nothing to train on")
        if process.is_main:
            if overwrite and not resume:
                for earlier in _run_files(self.out_dir, method.final_checkpoint):
                    earlier.unlink()
            self.out_dir.mkdir(parents=True, exist_ok=True)
            values = sum(parameter.numel() for parameter in method.module.parameters() if parameter.requires_grad)
            print(f"training {values} values of {self.provenance.get('method')} on {len(self.dataset)} items "
                  f"({method.loss_mode}), epochs {self.start_epoch + 1}..{settings.epochs}", file=sys.stderr)
        self.parameters = [parameter for parameter in method.module.parameters() if parameter.requires_grad]
        self.checkpoint = self.out_dir / EPOCH_CHECKPOINT.format(epoch=self.start_epoch)
        self.steps_per_epoch = len(_epoch_batches(len(self.dataset), settings, 0))
        self._log_handle = None
        self._board = None
        self._totals: list[float] = []
        self._loader = None

    def __enter__(self) -> TrainingSession:
        # Only the main process keeps the log; the others write theirs to nowhere.
        self._log_handle = open(self.out_dir / LOG_FILE if self.process.is_main else os.devnull, "a", newline="")
        self._log = csv.writer(self._log_handle)
        if self._log_handle.tell() == 0:
            self._log.writerow(["epoch", "step", "loss", *(f"{part}_loss" for part in self.method.loss_parts)])
        if self.tensorboard and self.process.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(log_dir=str(self.out_dir / TENSORBOARD_FOLDER))
        return self

    def __exit__(self, *exc_info) -> None:
        self._log_handle.close()
        if self._board is not None:
            self._board.close()

    def epoch_steps(self, epoch: int) -> list[tuple[list[int], list[int]]]:
        """Start epoch `epoch` (0-based): its (global batch, this process's share) pairs, in the seeded order."""
        self.method.start_epoch(epoch)
        self._totals = []
        batches = _epoch_batches(len(self.dataset), self.settings, epoch)
        shares = [batch[self.process.rank::self.process.world_size] for batch in batches]
        self._loader = iter(DataLoader(self.dataset, batch_sampler=[share for share in shares if share],
                                       num_workers=self.settings.workers))
        return list(zip(batches, shares))

    def step(self, epoch: int, index: int, batch: list[int], share: list[int]) -> dict[str, float]:
        """One optimiser step of the epoch on the next batch; its loss parts, logged."""
        parts = _step(self.method, self.optimizer, self.parameters, next(self._loader) if share else None,
                      len(share) / len(batch), self.process)
        self._totals.append(parts["total"])
        self._log.writerow([epoch + 1, index, *(f"{parts[key]:.6f}" for key in ("total", *self.method.loss_parts))])
        if self._board is not None:  # the same values as the log row, by global step (continuing on resume)
            global_step = epoch * self.steps_per_epoch + index
            self._board.add_scalar("train/loss", parts["total"], global_step)
            for part in self.method.loss_parts:
                self._board.add_scalar(f"train/{part}_loss", parts[part], global_step)
            self._board.add_scalar("train/learning_rate", self.optimizer.param_groups[0]["lr"], global_step)
        return parts

    def end_epoch(self, epoch: int) -> None:
        """The epoch's checkpoint (main process), validation and best checkpoint."""
        self._log_handle.flush()
        run = self.run
        run.epoch_losses.append(sum(self._totals) / len(self._totals))
        self.history.append(run.epoch_losses[-1])
        if self._board is not None:
            self._board.add_scalar("train/epoch_mean_loss", run.epoch_losses[-1], epoch + 1)
            self._board.flush()
        self.checkpoint = self.out_dir / EPOCH_CHECKPOINT.format(epoch=epoch + 1)
        metadata = {**self.provenance, "epoch": epoch + 1, "epoch_losses": [round(loss, 6) for loss in self.history]}
        if not self.process.is_main:
            return
        self.method.save(self.checkpoint, self.optimizer, metadata)
        line = f"epoch {epoch + 1}/{self.settings.epochs}: mean loss {run.epoch_losses[-1]:.4f}"
        if self.validation is not None:
            score = self.validation.score(self.checkpoint)
            run.validation_scores.append(score)
            line += f", {self.validation.describe(score)}"
            if self.validation.is_best(score):
                with atomic_write(self.out_dir / BEST_CHECKPOINT) as temporary:
                    shutil.copyfile(self.checkpoint, temporary)
                run.best_checkpoint = self.out_dir / BEST_CHECKPOINT
        print(f"{line} -> {self.checkpoint}", file=sys.stderr)

    def finish(self) -> TrainingRun:
        """The last epoch's checkpoint copied to the method's final file (main process); the run."""
        if self.process.is_main:
            with atomic_write(self.run.final_checkpoint) as temporary:
                shutil.copyfile(self.checkpoint, temporary)
        return self.run


def check_tensorboard() -> None:
    """Refuse --tensorboard, before any model loads, where the optional extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise UserInputError('--tensorboard: needs the tensorboard package (pip install "medclip-ad[tensorboard]")')


def train(method: MethodTraining, settings: LoopSettings, out_dir: Path, *, resume: Path | None = None,
          init: Path | None = None, validation: Validation | None = None, overwrite: bool = False,
          process: TrainingProcess = SingleProcess(), show_progress: bool = True) -> TrainingRun:
    """Train `method` for `settings.epochs` into `out_dir`; `resume` continues an epoch checkpoint exactly,
    `init` starts from another checkpoint's weights (fresh optimiser, epoch 1)."""
    session = TrainingSession(method, settings, out_dir, resume=resume, init=init, validation=validation,
                              overwrite=overwrite, process=process)
    return run_epochs(session, show_progress)


def run_epochs(session: TrainingSession, show_progress: bool = True) -> TrainingRun:
    """The session's remaining epochs, step by step (with a progress bar on the main process)."""
    epochs = session.settings.epochs
    with session:
        for epoch in range(session.start_epoch, epochs):
            steps = tqdm(session.epoch_steps(epoch), desc=f"epoch {epoch + 1}/{epochs}",
                         disable=not (show_progress and session.process.is_main), leave=False)
            for index, (batch, share) in enumerate(steps):
                session.step(epoch, index, batch, share)
            session.end_epoch(epoch)
    return session.finish()


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
