"""The small API users call: load a detector once, then score batches of 8-bit images.

    predictor = AnomalyPredictor(DetectorConfig(clip_weights="openai", prompts="prompts.safetensors"))
    result = predictor.predict([image_a, image_b])   # uint8 arrays, any sizes
    result.scores, result.maps                        # (B,), one (H, W) float32 map per image

Text features are computed once at load time; batches run without gradients. The backbone runs in the
chosen precision (fp32 on the CPU, bf16 autocast on CUDA by default); logits, scores, maps and blur are
always fp32, and `fp32` on CUDA also turns TF32 off. Maps come back in each input's own pixel grid and
are never normalised. On the CPU a batch runs through the model in passes of bounded size (see
CPU_TOKEN_ROWS_PER_PASS); `compile` compiles the vision encoders (`medclip_ad.modeling.compilation`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medclip_ad import __version__
from medclip_ad.config import PRECISIONS, DetectorConfig
from medclip_ad.devices import resolve_device
from medclip_ad.errors import UserInputError
from medclip_ad.inference.preprocessing import model_pictures, normalise
from medclip_ad.io.file_digest import file_sha256
from medclip_ad.methods.output import DetectorOutput
from medclip_ad.methods.registry import build_detector
from medclip_ad.modeling.anomaly_maps import anomaly_map, layer_anomaly_maps
from medclip_ad.modeling.clip_backbone import ClipBackbone
from medclip_ad.modeling.compilation import check_compile_request, compile_vision_encoders, mark_step
from medclip_ad.modeling.gaussian_blur import gaussian_blur
from medclip_ad.modeling.int8 import int8_available, int8_blocks
from medclip_ad.modeling.precision import disable_tf32
from medclip_ad.modeling.vision_tower import ClipVisionTower
from medclip_ad.random_weights import RANDOM_WEIGHTS_WARNING  # noqa: F401 - its users import it from here

# On the CPU a block's matrix products run at full speed from about a thousand token rows on, and larger
# batches only grow the activations: ViT-L at 518 px has 1,370 rows per image and a 22 MB MLP activation,
# which at batch 2 passes glibc's 32 MB mmap threshold, so every such allocation page-faults in fresh,
# kernel-zeroed memory (575,000 faults per slice at batch 2; none in passes of one image, which reuse freed
# heap memory; benchmarks/bench_side_by_side.py). The model therefore runs at most this many token rows per
# pass there: ViT-L and ViT-B at their published sizes one image at a time, the tiny test model at 224 px
# seven. Outputs do not depend on it.
CPU_TOKEN_ROWS_PER_PASS = 2048


@dataclass
class Prediction:
    """Image scores (B,) and anomaly maps, one (H, W) array per input in its own size.

    `layer_maps` (only on request) holds one (n_layers, H, W) array per input; they sum to `maps`.
    """

    scores: np.ndarray
    maps: list[np.ndarray]
    layer_maps: list[np.ndarray] | None = None


@dataclass
class PreparedBatch:
    """A batch ready for the model: its pictures (B, S, S, 3) uint8, normalised on the model's device, and each
    input's own (H, W)."""

    images: torch.Tensor
    sizes: list[tuple[int, int]]


class AnomalyPredictor:
    """A loaded detector: weights, prompts, method, layers, image size and device fixed at construction."""

    def __init__(self, config: DetectorConfig, backbone: ClipBackbone | None = None) -> None:
        if config.precision not in PRECISIONS:
            raise UserInputError(f"--precision {config.precision}: choose from {', '.join(PRECISIONS)}")
        if config.batch_size < 1:
            raise UserInputError(f"--batch-size {config.batch_size}: must be at least 1")
        self.config = config
        self.device = resolve_device(config.device)
        check_compile_request(config.compile, self.device, config.precision)
        built = build_detector(config, backbone)
        self.backbone = built.backbone
        self.model = built.model.to(self.device).eval()
        if config.precision == "int8":
            self._quantise_vision_encoders()
        compile_vision_encoders(self.model, config.compile)
        self._images_per_pass = self._pick_images_per_pass()
        self._checkpoint = built.checkpoint
        self._autocast_dtype = self._pick_autocast_dtype()
        self._weights_digest: str | None = None

    @property
    def random_weights(self) -> bool:
        return self.backbone.random_weights

    @property
    def map_range(self) -> float:
        """The upper end of every map's range [0, map_range]: the number of maps the final map sums."""
        return self.model.map_range

    def provenance(self) -> dict[str, object]:
        """The `model` block of scores.json: enough to reproduce or question any result."""
        prompts_path = Path(self._checkpoint.path).resolve() if self._checkpoint and self._checkpoint.path else None
        weights_file = self.backbone.weights_file
        return {
            "method": self.config.method,
            "backbone": self.backbone.architecture,
            "clip_weights": self.backbone.source,
            "activation": self.backbone.activation,
            "activation_reason": self.backbone.activation_reason,
            "clip_weights_file": str(weights_file) if weights_file else None,
            "clip_weights_sha256": self._weights_sha256(),
            "prompts": str(prompts_path) if prompts_path else None,
            "prompts_sha256": file_sha256(prompts_path) if prompts_path else None,
            "layers": list(self.model.layers),
            "image_size": self.config.image_size,
            "random_weights": self.random_weights,
            "precision": self._precision_name(),
            "package_version": __version__,
        }

    def _weights_sha256(self) -> str | None:
        """The CLIP weights file's hash, computed once per predictor (a ViT-L file is ~900 MB)."""
        if self.backbone.weights_file is None:
            return None
        if self._weights_digest is None:
            self._weights_digest = file_sha256(self.backbone.weights_file)
        return self._weights_digest

    @torch.no_grad()
    def predict_tensor(self, images: torch.Tensor, with_layers: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (B, 3, S, S) -> scores (B,) and blurred maps at S x S: (B, S, S), or (B, L, S, S) per layer."""
        images = images.to(self.device, non_blocking=True)
        mark_step(self.config.compile)
        with self._autocast():  # the backbone only: each method's head runs in fp32 (modeling/precision.py)
            output = self._run_model(images)
        scores = output.image_logits.float().softmax(dim=-1)[:, 1]
        if not with_layers:
            return scores, anomaly_map(output.probability_maps)
        layer_maps = layer_anomaly_maps(output.probability_maps)
        batch, layers, size, _ = layer_maps.shape
        return scores, gaussian_blur(layer_maps.reshape(batch * layers, size, size)).reshape(layer_maps.shape)

    def _run_model(self, images: torch.Tensor) -> DetectorOutput:
        """The detector on a batch; on the CPU in passes of at most CPU_TOKEN_ROWS_PER_PASS token rows."""
        if self._images_per_pass is None or images.shape[0] <= self._images_per_pass:
            return self.model(images)
        parts = [self.model(chunk) for chunk in images.split(self._images_per_pass)]
        return DetectorOutput(torch.cat([part.image_logits for part in parts]),
                              [torch.cat(maps) for maps in zip(*(part.probability_maps for part in parts))])

    def _pick_images_per_pass(self) -> int | None:
        """None (the whole batch at once) on accelerators, whose throughput grows with the batch."""
        towers = [module for module in self.model.modules() if isinstance(module, ClipVisionTower)]
        if self.device.type != "cpu" or not towers:
            return None
        return max(1, CPU_TOKEN_ROWS_PER_PASS // max(tower.grid ** 2 + 1 for tower in towers))

    def prepare(self, images: Sequence[np.ndarray]) -> PreparedBatch:
        """8-bit images -> the model's input pictures: no torch compute, so a reader thread can run it ahead
        (`model_pictures`); on CUDA they go over as 8 bits, a quarter of the float bytes."""
        pictures = torch.from_numpy(model_pictures(images, self.config.image_size))
        if self.device.type == "cuda":
            pictures = pictures.pin_memory()  # makes the copy to the device asynchronous
        return PreparedBatch(pictures, [tuple(image.shape[:2]) for image in images])

    def predict_prepared(self, batch: PreparedBatch, with_layers: bool = False) -> Prediction:
        """Score one prepared batch; maps are resized on the device and come back in one transfer."""
        pictures = batch.images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        scores, maps = self.predict_tensor(normalise(pictures), with_layers)
        resized = [resize_map(image_map, size) for image_map, size in zip(maps, batch.sizes)]
        host = torch.cat([scores.float(), *(m.reshape(-1) for m in resized)]).cpu().numpy()
        host_scores, offset = host[:len(resized)].astype(np.float32), len(resized)
        host_maps = []
        for image_map in resized:
            host_maps.append(host[offset:offset + image_map.numel()].reshape(image_map.shape))
            offset += image_map.numel()
        if with_layers:
            return Prediction(host_scores, [m.sum(axis=0) for m in host_maps], host_maps)
        return Prediction(host_scores, host_maps)

    def predict(self, images: Sequence[np.ndarray], with_layers: bool = False) -> Prediction:
        """8-bit images (H, W) or (H, W, 3), any sizes -> scores and maps in each image's own grid."""
        parts = [self.predict_prepared(self.prepare(images[start:start + self.config.batch_size]), with_layers)
                 for start in range(0, len(images), self.config.batch_size)]
        scores = np.concatenate([part.scores for part in parts]) if parts else np.zeros(0, np.float32)
        maps = [image_map for part in parts for image_map in part.maps]
        layer_maps = [layers for part in parts for layers in part.layer_maps] if with_layers else None
        return Prediction(scores, maps, layer_maps)

    def _precision_name(self) -> str:
        if self.config.precision == "int8":
            return "int8"
        return str(self._autocast_dtype).replace("torch.", "") if self._autocast_dtype else "fp32"

    def _quantise_vision_encoders(self) -> None:
        """`--precision int8`: the vision encoder's linear layers in int8 (CPU), everything after them fp32."""
        if self.device.type != "cpu":
            raise UserInputError("--precision int8: runs on the CPU only; on CUDA use bf16")
        if not int8_available():
            raise UserInputError("--precision int8: this torch build has no x86 int8 kernels (fbgemm)")
        for module in self.model.modules():
            if isinstance(module, ClipVisionTower):
                module.blocks = int8_blocks(module.blocks)

    def _pick_autocast_dtype(self) -> torch.dtype | None:
        precision = self.config.precision
        if precision in ("fp32", "int8") or (precision == "auto" and self.device.type != "cuda"):
            if self.device.type == "cuda":
                disable_tf32()
            return None
        if precision == "fp16" and self.device.type != "cuda":
            raise UserInputError("--precision fp16: runs on CUDA only; use fp32 or bf16 on the CPU")
        return torch.float16 if precision == "fp16" else torch.bfloat16

    def _autocast(self):
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)


def resize_map(image_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Map(s) (..., S, S) at model size -> (..., H, W): each axis resized on its own, bilinear."""
    if tuple(image_map.shape[-2:]) == tuple(size):
        return image_map.float()
    leading = image_map.shape[:-2]
    flat = image_map.float().reshape(-1, 1, *image_map.shape[-2:])
    resized = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return resized.reshape(*leading, *size)
