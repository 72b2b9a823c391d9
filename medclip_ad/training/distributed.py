"""Multi-GPU and multi-node runs under torchrun: data-parallel training of any method, sharded case lists.

torchrun starts one process per device and tells each its RANK, WORLD_SIZE and LOCAL_RANK; `start` joins
them into one process group (nccl on CUDA, gloo on the CPU). Training: every rank builds the same model
from the same seed and runs the one training loop (`medclip_ad.training.loop`) as a `RankProcess`, which
sums the share-weighted gradients and loss parts of all ranks in one all-reduce per step, so a run computes
what a single process computes wherever the loss is a mean over items (up to float rounding); rank 0
alone logs and writes checkpoints. Inference: each rank takes every WORLD_SIZE-th case of the same list.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError
from medclip_ad.training.loop import TrainingRun, TrainingSession, run_epochs
from medclip_ad.training.runs import start_training

TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
PACKAGE_LOGGER = "medclip_ad"

Item = TypeVar("Item")


def rank_device(device: str) -> str:
    """This rank's device: `auto` and `cuda` mean the GPU of the local rank; `cpu` and `cuda:N` stay as given."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device == "cuda" else device


def under_torchrun() -> bool:
    """Whether this process is one of a torchrun job's (its variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def start(device: str = "auto") -> bool:
    """Join the torchrun process group (nccl for CUDA ranks, gloo for CPU ones); quiet the logs of ranks > 0.

    Returns whether this call joined it (False: it was joined already, and whoever did leaves it).
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise UserInputError(f"multi-GPU runs start under torchrun ({', '.join(missing)} not set): "
                             "torchrun --nproc_per_node=N -m monai.bundle run --config_file \"['configs/X.json',"
                             "'configs/multi_gpu_X.json']\" ...")
    if dist.is_initialized():
        return False
    resolved = torch.device(rank_device(device))
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    if dist.get_rank() != 0:
        logging.getLogger(PACKAGE_LOGGER).setLevel(logging.WARNING)
    return True


def stop() -> None:
    """Wait for every rank to finish, then leave the process group."""
    if not dist.is_initialized():
        return
    _barrier()
    dist.destroy_process_group()


def shard(items: Sequence[Item]) -> list[Item]:
    """This rank's share of a list every rank built the same way: items[rank::world_size]."""
    _require_group()
    return list(items[dist.get_rank()::dist.get_world_size()])


class RankProcess:
    """One rank of a data-parallel training run (see `medclip_ad.training.loop.TrainingProcess`)."""

    def __init__(self, device: torch.device) -> None:
        _require_group()
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device
        self.is_main = self.rank == 0

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        on_device = values.to(self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(on_device)
        return on_device.cpu()


def train_method_data_parallel(method: str, detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                               recipe: object | None = None, **options) -> TrainingRun:
    """`train_method` as this rank of a torchrun job; the recipe's batch size is the global batch."""
    show_progress = options.pop("show_progress", True)
    return finish_rank(run_epochs(start_rank_training(method, detector, manifests, out_dir, recipe, **options),
                                  show_progress))


def start_rank_training(method: str, detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                        recipe: object | None = None, **options) -> TrainingSession:
    """`start_training` as this rank of a torchrun job (on this rank's device)."""
    detector = dataclasses.replace(detector, device=rank_device(detector.device))
    return start_training(method, detector, manifests, out_dir, recipe,
                          process=RankProcess(torch.device(detector.device)), **options)


def finish_rank(run: TrainingRun) -> TrainingRun:
    """Wait for every rank: the checkpoint rank 0 writes exists for everyone once this returns."""
    _barrier()
    return run


def _barrier() -> None:
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _require_group() -> None:
    if not dist.is_initialized():
        raise UserInputError("no torch.distributed process group: call medclip_ad.training.distributed.start() under "
                             "torchrun first (the multi_gpu_*.json configs do it in `initialize`)")
