"""What a user chooses when loading a detector, in one place."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from medclip_ad.constants import DEFAULT_LAYERS, IMAGE_SIZE
from medclip_ad.errors import UserInputError
from medclip_ad.methods import DEFAULT_METHOD

if TYPE_CHECKING:
    from medclip_ad.inference.calibration import Calibration

# This module imports nothing heavy: the command line builds its options (choices, defaults) from it
# without loading torch.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16", "int8")
# `--compile`: the vision encoders eager, compiled by TorchInductor, or compiled and replayed as CUDA graphs.
COMPILE_MODES: tuple[str, ...] = ("off", "inductor", "cuda-graphs")
# CLIP MLP activations (`auto`: decided from the checkpoint, the method and the weights; see DetectorConfig).
ACTIVATIONS: tuple[str, ...] = ("auto", "quick_gelu", "gelu")
# Volume slicing planes (by the array axis normal to each in RAS) and slice-score aggregations.
PLANE_NORMALS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
AGGREGATIONS: tuple[str, ...] = ("max", "topk_mean", "mean")
# DICOM outputs for PACS beside the case folder.
DICOM_OUTPUTS: tuple[str, ...] = ("parametric-map", "secondary-capture", "both")
# How a Parametric Map stores the map: 16-bit integers with a real-world value mapping (what PACS viewers
# render), or the float values themselves (exact, but Orthanc, DCMTK and GDCM cannot display them).
PARAMETRIC_MAP_ENCODINGS: tuple[str, ...] = ("uint16", "float32")
# `medclip-ad calibrate`: false-positive rates of the operating points, the percentile of normal map values
# that becomes the lesion-mask threshold, and the confidence of the bounds recorded on each rate.
CALIBRATION_FPRS: tuple[float, ...] = (0.01, 0.05, 0.10)
PIXEL_PERCENTILE: float = 99.9
CALIBRATION_CONFIDENCE: float = 0.95
# `--modality`: what a scan is, when its tags should not decide (or it has none).
MODALITIES: tuple[str, ...] = ("CT", "MR", "other")
# Deployment formats of `medclip-ad export`.
EXPORT_FORMATS: tuple[str, ...] = ("torchscript", "onnx")


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that decides a detector's outputs (recorded as provenance beside every result).

    clip_weights: `openai`, `openai:MODEL`, a checkpoint path, or `random:PRESET` (tests only).
    method: a name in `medclip_ad.methods.registry.METHODS`.
    prompts: the method checkpoint (option `--prompts`): what a trained method learned, in this
        project's .safetensors format or, where the method reads one, its reference format.
    precision: `auto` is fp32 on CPU and bf16 autocast on CUDA; `int8` (CPU only) quantises the vision
        encoder's linear layers (faster, less exact: see benchmarks/bench_int8.py).
    compile: one of COMPILE_MODES (see `medclip_ad.modeling.compilation`); changes speed, not outputs
        beyond fp32 rounding, so it is not part of the provenance.
    activation: `quick_gelu`, `gelu`, or `auto`: the one recorded in the checkpoint, else the method's
        own (see `Method.activation`), else the weights' (see `modeling.clip_backbone`).
    """

    clip_weights: str = "openai"
    prompts: str | None = None
    method: str = DEFAULT_METHOD
    layers: tuple[int, ...] = DEFAULT_LAYERS
    image_size: int = IMAGE_SIZE
    device: str = "auto"
    batch_size: int = 8
    precision: str = "auto"
    activation: str = "auto"
    compile: str = "off"

    def __post_init__(self) -> None:
        """Refuse values that cannot work before anything loads (options are named as on the command line)."""
        from medclip_ad.methods.registry import get_method

        get_method(self.method)  # one line naming the choices for an unknown one
        if self.precision not in PRECISIONS:
            raise UserInputError(f"--precision {self.precision}: choose from {', '.join(PRECISIONS)}")
        if self.compile not in COMPILE_MODES:
            raise UserInputError(f"--compile {self.compile}: choose from {', '.join(COMPILE_MODES)}")
        _at_least(1, image_size=self.image_size, batch_size=self.batch_size)
        if not self.layers:
            raise UserInputError("--layers: name at least one layer")
        for layer in self.layers:
            _at_least(1, layers=layer)


@dataclass(frozen=True)
class CaseOptions:
    """Per-run choices that shape a case's outputs (not the model)."""

    axis: str | None = None  # None: the acquisition plane
    window: str | tuple[float, float] | None = None  # CT preset name or (width, level); None: by modality
    modality: str | None = None  # one of MODALITIES: overrides the tag and Hounsfield detection (io.intensity)
    aggregation: str = "max"
    top_k: int = 5
    overlay_count: int = 5
    overwrite: bool = False
    volume_index: int | None = None  # which volume of a 4-D NIfTI
    dicom_out: str | None = None  # also write DICOM: one of DICOM_OUTPUTS
    parametric_map_encoding: str = "uint16"  # one of PARAMETRIC_MAP_ENCODINGS
    calibration: Calibration | None = field(default=None, compare=False)  # flags cases, thresholds maps
    operating_point: str | None = None  # e.g. "5%"; None: the calibration's middle one
    # When the run started: its DICOM series get their numbers, descriptions, dates and times from it.
    run_started: datetime = field(default_factory=datetime.now, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse values that cannot work before any case is read (options named as on the command line)."""
        if self.axis is not None and self.axis not in PLANE_NORMALS:
            raise UserInputError(f"--axis {self.axis}: choose from {', '.join(PLANE_NORMALS)}")
        if self.aggregation not in AGGREGATIONS:
            raise UserInputError(f"--aggregation {self.aggregation}: choose from {', '.join(AGGREGATIONS)}")
        if self.dicom_out is not None and self.dicom_out not in DICOM_OUTPUTS:
            raise UserInputError(f"--dicom-out {self.dicom_out}: choose from {', '.join(DICOM_OUTPUTS)}")
        _at_least(1, top_k=self.top_k)
        _at_least(0, overlays=self.overlay_count)
        if self.volume_index is not None:
            _at_least(0, volume_index=self.volume_index)
        if isinstance(self.window, tuple):
            width, level = self.window
            if not (math.isfinite(width) and math.isfinite(level) and width > 0):
                raise UserInputError(f"--window {width:g} {level:g}: the width must be a positive number and the "
                                     f"level a finite one")


def _at_least(smallest: int, **values: int) -> None:
    """Integer options below their smallest sensible value (given by keyword, named as options)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < smallest:
            raise UserInputError(f"--{name.replace('_', '-')} {value}: must be a whole number of at least {smallest}")
