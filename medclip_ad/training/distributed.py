"""Multi-GPU and multi-node runs under torchrun: data-parallel prompt training and sharded case lists.

torchrun starts one process per device and tells each its RANK, WORLD_SIZE and LOCAL_RANK; `start` joins
them into one process group (nccl on CUDA, gloo on the CPU). Training: every rank builds the same model
from the same seed, DistributedDataParallel averages the prompt learner's gradients, and a
DistributedSampler deals the single-process epoch order out to the ranks, so each step's global batch is
the single-process batch. Where every rank's share weighs the same in the loss (equal shares, every image
with its ground truth) a run computes what a single process computes, up to float rounding; rank 0 alone
logs and writes checkpoints. Inference: each rank takes every WORLD_SIZE-th case of the same list.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError
from medclip_ad.methods.anomalyclip.training import SingleProcess, TrainingConfig, TrainingRun, train_prompts_as

TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
PACKAGE_LOGGER = "medclip_ad"

Item = TypeVar("Item")


def rank_device(device: str) -> str:
    """This rank's device: `auto` and `cuda` mean the GPU of the local rank; `cpu` and `cuda:N` stay as given."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device == "cuda" else device


def start(device: str = "auto") -> None:
    """Join the torchrun process group (nccl for CUDA ranks, gloo for CPU ones); quiet the logs of ranks > 0."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise UserInputError(f"multi-GPU runs start under torchrun ({', '.join(missing)} not set): "
                             "torchrun --nproc_per_node=N -m monai.bundle run --config_file \"['configs/X.json',"
                             "'configs/multi_gpu_X.json']\" ...")
    if dist.is_initialized():
        return
    resolved = torch.device(rank_device(device))
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    if dist.get_rank() != 0:
        logging.getLogger(PACKAGE_LOGGER).setLevel(logging.WARNING)


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
    """One rank of a data-parallel training run (see `medclip_ad.methods.anomalyclip.training.TrainingProcess`)."""

    def __init__(self, device: torch.device) -> None:
        _require_group()
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device
        self.is_main = self.rank == 0

    def loader(self, dataset: Dataset, config: TrainingConfig, epoch: int) -> DataLoader:
        """This rank's part of each global batch: the single-process epoch order, dealt out rank by rank.

        Dealing position i to rank i % world_size splits every run of `batch_size` positions evenly, so
        step k of all ranks together sees exactly the single-process batch k.
        """
        if config.batch_size % self.world_size:
            raise UserInputError(f"--batch-size {config.batch_size}: the global batch must divide evenly over "
                                 f"{self.world_size} processes")
        single = SingleProcess().loader(range(len(dataset)), dataclasses.replace(config, workers=0), epoch)
        ordered = Subset(dataset, torch.cat(list(single)).tolist())
        sampler = DistributedSampler(ordered, num_replicas=self.world_size, rank=self.rank, shuffle=False)
        return DataLoader(ordered, batch_size=config.batch_size // self.world_size, sampler=sampler,
                          num_workers=config.workers)

    def text_source(self, learner: nn.Module) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(learner, device_ids=device_ids)

    def mean(self, parts: dict[str, float]) -> dict[str, float]:
        keys = sorted(parts)
        values = torch.tensor([parts[key] for key in keys], dtype=torch.float64,
                              device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(values)
        return {key: float(value) / self.world_size for key, value in zip(keys, values)}


def train_prompts_data_parallel(detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                                config: TrainingConfig = TrainingConfig(), resume: Path | None = None,
                                show_progress: bool = True) -> TrainingRun:
    """`train_prompts` as this rank of a torchrun job; `config.batch_size` is the global batch."""
    detector = dataclasses.replace(detector, device=rank_device(detector.device))
    run = train_prompts_as(RankProcess(torch.device(detector.device)), detector, manifests, out_dir, config,
                           resume, show_progress)
    _barrier()  # the checkpoint rank 0 writes exists for everyone once this returns
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
