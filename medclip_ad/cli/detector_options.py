"""Command-line options that choose a detector, shared by every command that loads one."""

from __future__ import annotations

import argparse

from medclip_ad.config import ACTIVATIONS, COMPILE_MODES, PRECISIONS, DetectorConfig
from medclip_ad.constants import DEFAULT_LAYERS, IMAGE_SIZE
from medclip_ad.errors import UserInputError
from medclip_ad.methods import DEFAULT_METHOD
from medclip_ad.methods.registry import METHOD_NAMES, METHODS, get_method


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """Weights, layers, image size and device: what training and inference both need."""
    group = parser.add_argument_group("backbone")
    group.add_argument("--clip-weights", default="openai", metavar="W",
                       help="`openai` (downloaded by open_clip on first use), a local CLIP checkpoint file, "
                            "or random:tiny (random weights: plumbing checks only)")
    group.add_argument("--layers", type=int, nargs="+", metavar="L",
                       help="1-based ViT blocks whose maps are used (default: those recorded in --prompts, else "
                            f"the published {' '.join(map(str, DEFAULT_LAYERS))}); methods whose layers are part of "
                            "their recipe set them when training and read them from their checkpoint after")
    group.add_argument("--image-size", type=int, metavar="S",
                       help=f"model input side in pixels (default: the one recorded in --prompts, else {IMAGE_SIZE})")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    group.add_argument("--activation", choices=ACTIVATIONS, default="auto",
                       help="the CLIP MLPs' activation; auto: the one recorded in the checkpoint, else the method's "
                            "own (" + ", ".join(f"{name}: {method.activation[0]}" for name, method in METHODS.items()
                                                if method.activation)
                            + "), else the weights' (quick_gelu for OpenAI's; assumed, with a note, for a plain "
                              "weights file)")


def add_detector_arguments(parser: argparse.ArgumentParser, batch_size: int = 8) -> None:
    """Everything that loads a detector for inference or evaluation."""
    add_backbone_arguments(parser)
    group = parser.add_argument_group("detector")
    group.add_argument("--prompts", metavar="P",
                       help="the method checkpoint (.safetensors from `medclip-ad train`, or a reference .pth)")
    group.add_argument("--method", choices=METHOD_NAMES,
                       help=f"default: the method recorded in the --prompts checkpoint, {DEFAULT_METHOD} without one. "
                            + "; ".join(f"{name}: {method.summary}" for name, method in METHODS.items()))
    group.add_argument("--batch-size", type=int, default=batch_size, metavar="N", help="images or slices per batch")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: fp32 on CPU, bf16 autocast on CUDA; int8: the vision encoder's linear "
                            "layers quantised, CPU only (faster, less exact; not for published numbers)")
    group.add_argument("--compile", choices=COMPILE_MODES, nargs="?", const="inductor", default="off",
                       help="compile the vision encoder with torch.compile (`--compile` alone: inductor); "
                            "cuda-graphs: also replay it as one CUDA graph per batch size (CUDA only). Each "
                            "batch size compiles once at its first batch (minutes for ViT-L); off by default")


def detector_config(args: argparse.Namespace) -> DetectorConfig:
    """The detector the options describe; `--layers` is refused where the checkpoint fixes the layers.

    Layers and image size not given are those recorded in the --prompts checkpoint (else the defaults);
    given ones that contradict the checkpoint are refused when it is loaded.
    """
    prompts = getattr(args, "prompts", None)
    recorded = recorded_layers = recorded_size = None
    if prompts:  # reading a checkpoint's header needs torch; without one, options are checked without it
        from medclip_ad.methods.checkpoint import recorded_geometry, recorded_method

        recorded = recorded_method(prompts)
        recorded_layers, recorded_size = recorded_geometry(prompts)
    if recorded is not None and recorded not in METHOD_NAMES:
        raise UserInputError(f"{prompts}: the checkpoint records method {recorded!r}, which this medclip-ad does not "
                             f"know (it knows {', '.join(METHOD_NAMES)})")
    method = getattr(args, "method", None) or recorded or DEFAULT_METHOD
    if get_method(method).layers_from_checkpoint and args.layers and prompts:
        raise UserInputError(f"--layers: not used by --method {method} at inference; its map fuses the feature "
                             f"layers recorded in its checkpoint (choose them when training)")
    batch_size = getattr(args, "batch_size", None)  # train's is its recipe's, None when not given
    return DetectorConfig(clip_weights=args.clip_weights, prompts=prompts,
                          method=method, layers=tuple(args.layers or recorded_layers or DEFAULT_LAYERS),
                          image_size=args.image_size if args.image_size is not None else recorded_size or IMAGE_SIZE,
                          device=args.device,
                          activation=getattr(args, "activation", "auto"),
                          batch_size=DetectorConfig.batch_size if batch_size is None else batch_size,
                          precision=getattr(args, "precision", "auto"),
                          compile=getattr(args, "compile", "off"))
