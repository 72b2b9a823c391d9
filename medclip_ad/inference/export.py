"""Export a loaded detector for deployment (TorchScript, and ONNX when installed), checked against eager PyTorch.

The exported graph is the predictor's model path with the text side baked in (cached text features, or the rwda
head's weights; adaclip, whose text features depend on each image, carries its prompted text encoder and
its semantic-fusion clustering instead): normalised images (B, 3, S, S) float32 -> image scores (B,) and
blurred anomaly maps (B, S, S) at model size, exactly what `AnomalyPredictor.predict_tensor` returns.
Preprocessing (squash-resize to S, RGB / 255, CLIP mean/std) and resizing maps back to each input stay
with the caller.

Both formats come from one `torch.jit.trace` of that wrapper; the TorchScript file is frozen, which also
drops the text encoder where it is unused. Each export is run on a batch of another size than the traced one (so a
baked-in batch size would show) and compared with the eager predictor; a file only appears once its
largest difference is within `EXPORT_TOLERANCE`. TorchScript runs on the device it was traced on; ONNX
runs anywhere onnxruntime does. Exports are fp32.

torch 2.14 marks TorchScript and its TorchScript-based ONNX exporter deprecated (in favour of
torch.export); those notices, and the tracer's warnings about sizes that the fixed image size makes
constant, are addressed to this module rather than to users and are silenced while exporting.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from medclip_ad.config import EXPORT_FORMATS
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor
from medclip_ad.io.writers import atomic_write, write_json
from medclip_ad.modeling.anomaly_maps import anomaly_map
from medclip_ad.output_files import EXPORT_FILE_NAMES, EXPORT_MANIFEST_FILE

# Largest absolute difference from the eager predictor an export may show, in scores and in maps.
EXPORT_TOLERANCE = 1e-4
INPUT_NAME = "images"
OUTPUT_NAMES: tuple[str, str] = ("scores", "maps")
# The trace sees one batch size, the check another: a batch size frozen into the graph cannot pass.
TRACE_BATCH, CHECK_BATCH = 1, 2
CHECK_SEED = 0
ONNX_OPSET = 17
ONNX_PACKAGES: tuple[str, ...] = ("onnx", "onnxruntime")


class DeployableDetector(nn.Module):
    """Normalised images -> (scores (B,), blurred maps (B, S, S)): the predictor's model path as one module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(images)
        return output.image_logits.softmax(dim=-1)[:, 1], anomaly_map(output.probability_maps)


@dataclass(frozen=True)
class ExportCheck:
    """One exported file and how far its outputs are from the eager predictor's on the check batch."""

    format: str
    path: Path
    max_score_difference: float
    max_map_difference: float

    @property
    def passed(self) -> bool:
        return max(self.max_score_difference, self.max_map_difference) <= EXPORT_TOLERANCE

    def describe(self) -> str:
        verdict = "ok" if self.passed else f"FAILED (tolerance {EXPORT_TOLERANCE:g})"
        return (f"{self.format}: {self.path} (max abs difference to eager: scores {self.max_score_difference:.2e}, "
                f"maps {self.max_map_difference:.2e}) {verdict}")


class ExportMismatchError(RuntimeError):
    """An exported model does not reproduce the eager outputs; its file was not written."""

    def __init__(self, check: ExportCheck) -> None:
        super().__init__(check.describe())
        self.check = check


def onnx_available() -> bool:
    """ONNX export needs `onnx` to write the file and `onnxruntime` to check it."""
    return all(importlib.util.find_spec(package) is not None for package in ONNX_PACKAGES)


def available_formats() -> tuple[str, ...]:
    """The formats this installation can export and check."""
    return tuple(name for name in EXPORT_FORMATS if name != "onnx" or onnx_available())


def export_detector(predictor: AnomalyPredictor, out_dir: Path, formats: Sequence[str] | None = None,
                    overwrite: bool = False) -> list[ExportCheck]:
    """Export `predictor`'s detector in `formats` (default: all available) into `out_dir`, each checked.

    Raises ExportMismatchError, without writing that file, when an export differs from eager by more
    than EXPORT_TOLERANCE. `export.json` describes the inputs, outputs, model provenance and checks.
    """
    formats = list(formats or available_formats())
    out_dir = Path(out_dir)
    check_export_request(out_dir, formats, overwrite)
    if predictor.provenance()["precision"] != "fp32":
        raise UserInputError("--precision: exports are fp32; load the detector with --precision fp32")
    size = predictor.config.image_size
    generator = torch.Generator().manual_seed(CHECK_SEED)
    trace_images = torch.randn(TRACE_BATCH, 3, size, size, generator=generator).to(predictor.device)
    check_images = torch.randn(CHECK_BATCH, 3, size, size, generator=generator).to(predictor.device)
    eager_scores, eager_maps = (output.cpu() for output in predictor.predict_tensor(check_images))
    wrapper = DeployableDetector(predictor.model).eval()  # eval mode: a fixed text side, traced as constants
    with torch.no_grad(), _quiet_tracing():
        traced = torch.jit.trace(wrapper, trace_images, check_trace=False)
    exporters = {"torchscript": _export_torchscript, "onnx": _export_onnx}
    checks = []
    for name in formats:
        path = out_dir / EXPORT_FILE_NAMES[name]
        with atomic_write(path) as temporary, _quiet_tracing():
            scores, maps = exporters[name](traced, trace_images, check_images, temporary)
            check = ExportCheck(name, path, _max_difference(scores, eager_scores), _max_difference(maps, eager_maps))
            if not check.passed:
                raise ExportMismatchError(check)
        checks.append(check)
    write_json(out_dir / EXPORT_MANIFEST_FILE, _manifest(predictor, checks))
    return checks


def check_export_request(out_dir: Path, formats: Sequence[str], overwrite: bool) -> None:
    """Refuse, before a model loads, an unknown or uninstalled format and files that would be replaced."""
    unknown = [name for name in formats if name not in EXPORT_FORMATS]
    if unknown:
        raise UserInputError(f"--format {unknown[0]}: choose from {', '.join(EXPORT_FORMATS)}")
    if "onnx" in formats and not onnx_available():
        raise UserInputError(f"--format onnx: needs the packages {' and '.join(ONNX_PACKAGES)} "
                             f"(pip install {' '.join(ONNX_PACKAGES)})")
    existing = [path for path in (Path(out_dir) / EXPORT_FILE_NAMES[name] for name in formats) if path.exists()]
    if existing and not overwrite:
        raise UserInputError(f"{existing[0]}: already exists (pass --overwrite to replace it)")


def _export_torchscript(traced: torch.jit.ScriptModule, trace_images: torch.Tensor, check_images: torch.Tensor,
                        path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Freeze (weights become constants, unused ones go), serialise, reload and run exactly the bytes written.

    The reload reads the in-memory bytes this process just produced, never a file on disk, so nothing
    another user could have placed is ever handed to `torch.jit.load`.
    """
    serialised = io.BytesIO()
    torch.jit.save(torch.jit.freeze(traced.eval()), serialised)
    path.write_bytes(serialised.getvalue())
    loaded = torch.jit.load(io.BytesIO(serialised.getvalue()), map_location=check_images.device)
    with torch.no_grad():
        scores, maps = loaded(check_images)
    return scores.cpu(), maps.cpu()


def _export_onnx(traced: torch.jit.ScriptModule, trace_images: torch.Tensor, check_images: torch.Tensor,
                 path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Export the traced graph with a dynamic batch axis, then run the file in onnxruntime on the CPU."""
    import onnxruntime

    batch_axis = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    torch.onnx.export(traced, (trace_images,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                      dynamic_axes=batch_axis, opset_version=ONNX_OPSET, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, maps = session.run(list(OUTPUT_NAMES), {INPUT_NAME: check_images.cpu().numpy()})
    return torch.from_numpy(np.asarray(scores)), torch.from_numpy(np.asarray(maps))


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence what torch's tracing paths say to developers (see the module docstring), nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # The ONNX exporter notes that a traced module has no Python signature to read input names from.
        warnings.filterwarnings("ignore", message=".*skipping _decide_input_format")
        # ...and that advanced indexing is wrong for negative indices; ours are argmax/arange results.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        yield


def _max_difference(exported: torch.Tensor, eager: torch.Tensor) -> float:
    if exported.shape != eager.shape:
        return float("inf")
    return float((exported.float() - eager.float()).abs().max())


def _manifest(predictor: AnomalyPredictor, checks: list[ExportCheck]) -> dict[str, object]:
    """What a deployment needs to feed the files correctly, and where they came from."""
    size = predictor.config.image_size
    document: dict[str, object] = {
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32",
                  "preprocessing": "RGB resized to the model size, scaled to [0, 1], normalised with the CLIP "
                                   "mean and std (medclip_ad.inference.preprocessing.preprocess)"},
        "outputs": {OUTPUT_NAMES[0]: {"shape": ["batch"], "meaning": "image anomaly score (abnormal probability)"},
                    OUTPUT_NAMES[1]: {"shape": ["batch", size, size],
                                      "meaning": "blurred anomaly map at model size, summed over the layers, "
                                                 "never normalised"}},
        "model": predictor.provenance(),
        "torchscript_device": str(predictor.device),
        "checks": {check.format: {"file": check.path.name, "max_score_difference": check.max_score_difference,
                                  "max_map_difference": check.max_map_difference, "tolerance": EXPORT_TOLERANCE}
                   for check in checks},
    }
    if predictor.random_weights:
        document["warning"] = RANDOM_WEIGHTS_WARNING
    return document
