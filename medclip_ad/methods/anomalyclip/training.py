"""Glocal prompt training: only the prompt learner learns; CLIP is frozen and sees no gradient.

Defaults are the published recipe (Adam 1e-3, betas (0.5, 0.999), batch 8, 15 epochs, 518 px, layer 24,
seed 111, last epoch kept). The loop (seeded order, epoch checkpoints, resume, torchrun) is
`medclip_ad.training.loop`; this module supplies the prompts, the data and one glocal step.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.datasets.samples import warn_unmasked_anomalies
from medclip_ad.methods.anomalyclip.detector import AnomalyCLIP
from medclip_ad.methods.anomalyclip.recipe import FINAL_CHECKPOINT, TrainingConfig
from medclip_ad.methods.anomalyclip.checkpoint import (
    METHOD,
    learner_tensors,
    load_into_learner,
    load_prompt_checkpoint,
    new_prompt_learner,
)
from medclip_ad.methods.checkpoint import MethodCheckpoint, optimizer_tensors, save_method_checkpoint
from medclip_ad.modeling.dpam import DPAMVisionEncoder
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.training.data import ImageTraining
from medclip_ad.training.loop import TrainingRun, loop_settings, train
from medclip_ad.training.losses import glocal_loss

class PromptTraining(ImageTraining):
    """The loop's view of AnomalyCLIP: the prompt learner learns, one glocal loss per batch."""

    final_checkpoint = FINAL_CHECKPOINT
    loss_parts = ("global", "local")

    def __init__(self, detector: DetectorConfig, manifests: list[Manifest], config: TrainingConfig) -> None:
        super().__init__(detector, manifests, config)
        self.loss_mode = "glocal" if self.use_masks else "global only (no masks)"
        if self.use_masks:
            warn_unmasked_anomalies(self.samples)
        text_encoder = TextEncoder(self.backbone.model)
        self.module = new_prompt_learner(text_encoder)
        vision_encoder = DPAMVisionEncoder(self.backbone.model, detector.image_size, detector.layers)
        self.model = AnomalyCLIP(text_encoder, vision_encoder, self.module).to(self.device)

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=self.config.learning_rate, betas=self.config.betas)

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["image"].to(self.device)
        labels = batch["label"].to(self.device)
        output = self.model(images)  # CLIP is frozen, so autograd records only the text side
        # As in the reference, every image enters the local term; one without a mask file has an all-zero mask.
        masks = batch["mask"].to(self.device) if self.use_masks else None
        maps = output.probability_maps if self.use_masks else []
        return glocal_loss(output.image_logits, labels, maps, masks, self.config.local_weight)

    def save(self, path: Path, optimizer: torch.optim.Optimizer, metadata: dict[str, object]) -> None:
        learner = self.module
        tensors = {**learner_tensors(learner), **optimizer_tensors(learner, optimizer)}
        save_method_checkpoint(path, tensors, {
            **metadata, "n_ctx": learner.n_ctx, "depth": 1 + len(learner.deep_prompts),
            "t_n_ctx": learner.deep_prompts[0].shape[0] if len(learner.deep_prompts) else 0})

    def load(self, path: Path) -> MethodCheckpoint:
        checkpoint = load_prompt_checkpoint(path)
        load_into_learner(checkpoint, self.module)
        return checkpoint

    def provenance(self) -> dict[str, object]:
        return {**self.image_provenance(METHOD), "layers": list(self.detector.layers), "loss_mode": self.loss_mode,
                "activation": self.backbone.activation}


def train_prompts(detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                  config: TrainingConfig = TrainingConfig(), resume: Path | None = None,
                  show_progress: bool = True) -> TrainingRun:
    """Train prompts on the test splits of `manifests` (the published protocol) and write checkpoints."""
    return train(PromptTraining(detector, manifests, config), loop_settings(config), Path(out_dir), resume=resume,
                 show_progress=show_progress)
