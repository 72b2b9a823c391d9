"""Text-only training of the `rwda` head: no images at all, minutes on a CPU even with ViT-L's text encoder.

The frozen text encoder turns seeded random-word prompts into labelled embeddings once (batched, no
gradients); then only the small head learns, with Adam and cross-entropy over a few epochs. The seed
fixes the prompts, the head's initial weights and the batch order, so a run is reproducible. The
checkpoint is this project's safetensors format with method "rwda" and full provenance.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from medclip_ad.config import DetectorConfig, RandomWordTrainingConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import resolve_device
from medclip_ad.methods.anomalyclip.training import LOG_FILE, recipe_json
from medclip_ad.methods.checkpoint import save_prompt_checkpoint
from medclip_ad.methods.registry import load_backbone
from medclip_ad.methods.rwda.head import RandomWordHead
from medclip_ad.methods.rwda.random_word_prompts import (
    LabelledTextEmbeddings,
    random_word_embeddings,
)
from medclip_ad.modeling.text_encoder import TextEncoder

FINAL_CHECKPOINT = "rwda_head.safetensors"
# Prompts per text-encoder call: large enough to keep the encoder busy, small enough for a laptop's memory.
ENCODE_BATCH_SIZE = 256


@dataclass
class HeadTrainingRun:
    """What a finished run leaves behind: the checkpoint, the mean loss of each epoch, the final accuracy."""

    final_checkpoint: Path
    epoch_losses: list[float] = field(default_factory=list)
    accuracy: float = 0.0


def train_random_word_head(detector: DetectorConfig, out_dir: Path,
                           config: RandomWordTrainingConfig = RandomWordTrainingConfig(),
                           show_progress: bool = True) -> HeadTrainingRun:
    """Encode the random-word prompts with `detector`'s backbone, train the head on them, write the checkpoint."""
    if config.epochs < 1 or config.batch_size < 1:
        raise UserInputError(f"--epochs {config.epochs} / --batch-size {config.batch_size}: both must be at least 1")
    device = resolve_device(detector.device)
    backbone = load_backbone(detector)
    text_encoder = TextEncoder(backbone.model).to(device)
    data = random_word_embeddings(text_encoder, config.prompts, config.seed, ENCODE_BATCH_SIZE, show_progress)
    embed_dim = data.embeddings.shape[1]
    print(f"training the rwda head on {len(data.labels)} text embeddings ({embed_dim}-d), "
          f"{config.epochs} epochs, device {device}", file=sys.stderr)

    torch.manual_seed(config.seed)
    head = RandomWordHead(embed_dim, config.hidden_units).to(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = HeadTrainingRun(out_dir / FINAL_CHECKPOINT)
    run.epoch_losses = _fit(head, data, config, out_dir / LOG_FILE)
    run.accuracy = _accuracy(head, data)
    provenance = {"method": "rwda", "backbone": backbone.architecture, "clip_weights": backbone.source,
                  "embed_dim": embed_dim, "hidden_units": config.hidden_units,
                  "training_data": {"random_word_prompts": len(data.labels)}, "epochs": config.epochs,
                  "seed": config.seed, "recipe": recipe_json(config), "train_accuracy": round(run.accuracy, 6)}
    tensors = {name: value.detach().float().cpu() for name, value in head.state_dict().items()}
    save_prompt_checkpoint(run.final_checkpoint, tensors, provenance)
    print(f"epoch losses {', '.join(f'{loss:.4f}' for loss in run.epoch_losses)}; "
          f"accuracy on the prompts {run.accuracy:.3f} -> {run.final_checkpoint}", file=sys.stderr)
    return run


def _fit(head: RandomWordHead, data: LabelledTextEmbeddings, config: RandomWordTrainingConfig,
         log_path: Path) -> list[float]:
    """Adam on cross-entropy in seeded batch order; returns each epoch's mean loss, also logged to `log_path`."""
    device = next(head.parameters()).device
    optimizer = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
    order_generator = torch.Generator().manual_seed(config.seed)
    embeddings, labels = data.embeddings.to(device), data.labels.to(device)
    epoch_losses = []
    with open(log_path, "w", newline="") as log_handle:
        log = csv.writer(log_handle)
        log.writerow(["epoch", "loss"])
        for epoch in range(config.epochs):
            order = torch.randperm(len(labels), generator=order_generator).to(device)
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size]
                loss = F.cross_entropy(head(embeddings[batch]), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            epoch_losses.append(total / len(order))
            log.writerow([epoch + 1, f"{epoch_losses[-1]:.6f}"])
    return epoch_losses


@torch.no_grad()
def _accuracy(head: RandomWordHead, data: LabelledTextEmbeddings) -> float:
    device = next(head.parameters()).device
    predicted = head(data.embeddings.to(device)).argmax(dim=-1).cpu()
    return float((predicted == data.labels).float().mean())
