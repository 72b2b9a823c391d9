"""The bundle's `network_def`: what MONAI's own tools load, check and export as "the network".

`AnomalyMapNetwork` takes the normalised batch (B, 3, S, S) (squash-resized to S, RGB / 255, CLIP
mean/std; `network_data_format.inputs.image` in metadata.json) and returns the blurred anomaly map at
model size (B, 1, S, S), the text side baked in as `medclip-ad export` bakes it. `verify_net_in_out`
runs it on the shapes metadata.json declares; `export_torchscript` writes it as `models/model.ts`
(traced, checked against eager on another batch size) and records the file's sha256 in `large_files.yml`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from medclip_ad.inference.export import EXPORT_TOLERANCE, DeployableDetector
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.writers import atomic_write

MODEL_FILE = "models/model.ts"
LARGE_FILES = "large_files.yml"
# Traced at one batch size, checked at another, so a batch size frozen into the graph shows.
_TRACE_BATCH, _CHECK_BATCH = 1, 2


class AnomalyMapNetwork(nn.Module):
    """Normalised images (B, 3, S, S) -> anomaly maps (B, 1, S, S), the predictor's model with its text side fixed."""

    def __init__(self, predictor: AnomalyPredictor) -> None:
        super().__init__()
        self.predictor = predictor
        self.detector = DeployableDetector(predictor.model).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _, maps = self.detector(images)
        return maps[:, None]


def export_torchscript(network: AnomalyMapNetwork, bundle_root: str | os.PathLike,
                       metadata: dict | None = None) -> Path:
    """Write `models/model.ts` under `bundle_root` and list it with its sha256 in `large_files.yml`.

    The file embeds the user's CLIP weights, so it is built where they are and never committed.
    """
    predictor = network.predictor
    if predictor.provenance()["precision"] != "fp32":
        raise ValueError("export_torchscript: load the detector with precision fp32")
    size = predictor.config.image_size
    generator = torch.Generator().manual_seed(0)
    trace_images, check_images = (torch.randn(batch, 3, size, size, generator=generator).to(predictor.device)
                                  for batch in (_TRACE_BATCH, _CHECK_BATCH))
    network = network.eval()
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(network, trace_images, check_trace=False))
        difference = (traced(check_images) - network(check_images)).abs().max().item()
    if difference > EXPORT_TOLERANCE:
        raise RuntimeError(f"export_torchscript: traced network differs from eager by {difference:.2e} "
                           f"(tolerance {EXPORT_TOLERANCE:g}); nothing written")
    extra_files = {"provenance.json": json.dumps(predictor.provenance(), default=str)}
    if metadata:  # MONAI's ckpt_export stores the bundle's metadata in the file the same way
        extra_files["metadata.json"] = json.dumps(metadata)
    target = Path(bundle_root) / MODEL_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as temporary:
        torch.jit.save(traced, str(temporary), _extra_files=extra_files)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    listing = (f"# Written by the bundle's export_torchscript step: {MODEL_FILE} holds the user's CLIP weights, so it\n"
               f"# is built locally and never committed; the sha256 identifies the file that was built.\n"
               f"large_files:\n  - path: \"{MODEL_FILE}\"\n    hash_val: \"{digest}\"\n    hash_type: \"sha256\"\n")
    with atomic_write(Path(bundle_root) / LARGE_FILES) as temporary:
        Path(temporary).write_text(listing, encoding="utf-8")
    return target
