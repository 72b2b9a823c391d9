"""Text-only training of the `rwda` head: no images at all, minutes on a CPU even with ViT-L's text encoder.

The frozen text encoder turns seeded random-word prompts into labelled embeddings once (batched, no
gradients); then only the small head learns, with Adam and cross-entropy over a few epochs, in the
shared loop (`medclip_ad.training.loop`). The seed fixes the prompts, the head's initial weights and
the batch order, so a run is reproducible. The checkpoint is this project's safetensors format with
method "rwda" and full provenance.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medclip_ad.config import DetectorConfig
from medclip_ad.devices import resolve_device
from medclip_ad.methods.checkpoint import (
    MethodCheckpoint,
    load_method_checkpoint,
    load_module_weights,
    optimizer_tensors,
    save_method_checkpoint,
)
from medclip_ad.methods.rwda.head import RandomWordHead
from medclip_ad.methods.registry import load_backbone
from medclip_ad.methods.rwda.method import METHOD
from medclip_ad.methods.rwda.random_word_prompts import LabelledTextEmbeddings, random_word_embeddings
from medclip_ad.methods.rwda.recipe import FINAL_CHECKPOINT, RandomWordTrainingConfig
from medclip_ad.modeling.text_encoder import TextEncoder
from medclip_ad.training.data import training_provenance
from medclip_ad.training.loop import TrainingRun, loop_settings, train

# Prompts per text-encoder call: large enough to keep the encoder busy, small enough for a laptop's memory.
ENCODE_BATCH_SIZE = 256


class TextEmbeddingDataset(Dataset):
    """Labelled text embeddings as the loop's items: `embedding` (D,) and `label`."""

    def __init__(self, data: LabelledTextEmbeddings) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"embedding": self.data.embeddings[index], "label": self.data.labels[index]}


class HeadTraining:
    """The loop's view of rwda: the head learns from text embeddings, cross-entropy per batch."""

    final_checkpoint = FINAL_CHECKPOINT
    loss_parts: tuple[str, ...] = ()
    loss_mode = "cross-entropy on text embeddings"

    def __init__(self, detector: DetectorConfig, config: RandomWordTrainingConfig, show_progress: bool = True) -> None:
        self.config = config
        self.device = resolve_device(detector.device)
        self.backbone = load_backbone(detector)
        text_encoder = TextEncoder(self.backbone.model).to(self.device)
        self.data = random_word_embeddings(text_encoder, config.prompts, config.seed, ENCODE_BATCH_SIZE,
                                           show_progress)
        torch.manual_seed(config.seed)
        self.module = RandomWordHead(self.data.embeddings.shape[1], config.hidden_units).to(self.device)

    def dataset(self) -> TextEmbeddingDataset:
        return TextEmbeddingDataset(self.data)

    def start_epoch(self, epoch: int) -> None:
        """Nothing to redraw per epoch: the prompts are drawn once."""

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=self.config.learning_rate)

    def step(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.module(batch["embedding"].to(self.device))
        return {"total": F.cross_entropy(logits, batch["label"].to(self.device))}

    def save(self, path: Path, optimizer: torch.optim.Optimizer, metadata: dict[str, object]) -> None:
        tensors = {name: value.detach().float().cpu() for name, value in self.module.state_dict().items()}
        tensors.update(optimizer_tensors(self.module, optimizer))
        save_method_checkpoint(path, tensors, {**metadata, "train_accuracy": round(self.accuracy(), 6)})

    def load(self, path: Path) -> MethodCheckpoint:
        checkpoint = load_method_checkpoint(path, METHOD)
        load_module_weights(checkpoint, self.module)
        return checkpoint

    def provenance(self) -> dict[str, object]:
        return {**training_provenance(METHOD, self.backbone, {"random_word_prompts": len(self.data.labels)},
                                      self.config),
                "embed_dim": self.module.embed_dim, "hidden_units": self.config.hidden_units}

    @torch.no_grad()
    def accuracy(self) -> float:
        """The head's accuracy on its own training prompts."""
        predicted = self.module(self.data.embeddings.to(self.device)).argmax(dim=-1).cpu()
        return float((predicted == self.data.labels).float().mean())


def train_random_word_head(detector: DetectorConfig, out_dir: Path,
                           config: RandomWordTrainingConfig = RandomWordTrainingConfig(),
                           show_progress: bool = True, resume: Path | None = None) -> TrainingRun:
    """Encode the random-word prompts with `detector`'s backbone, train the head on them, write the checkpoints."""
    return train(HeadTraining(detector, config, show_progress), loop_settings(config), Path(out_dir), resume=resume,
                 show_progress=show_progress)
