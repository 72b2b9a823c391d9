"""`medclip-ad import-checkpoint`: convert a reference implementation's checkpoint to this project's format.

The method is told by the file's keys (e.g. AnomalyCLIP's reference saves `{"prompt_learner": ...}`,
AdaCLIP's a flat `clip_model.*` state dict); each method's importer does the conversion.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medclip_ad.constants import DEFAULT_BACKBONE, IMAGE_SIZE
from medclip_ad.errors import UserInputError
from medclip_ad.methods.registry import IMPORTING_METHOD_NAMES

HELP = ("convert a reference checkpoint to .safetensors: AnomalyCLIP prompts ({'prompt_learner': ...}) or "
        "AdaCLIP weights (its flat clip_model.* state dict, as released)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="reference checkpoint (.pth), read with weights_only=True")
    parser.add_argument("--out", type=Path, required=True, help="destination .safetensors file")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="backbone the checkpoint was trained with")
    parser.add_argument("--layers", type=int, nargs="+",
                        help="layers the checkpoint was trained with (default: the method's published ones)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--training-data", default="unknown", help="what it was trained on, e.g. mvtec")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from medclip_ad.io.writers import check_output_file
    from medclip_ad.methods.registry import checkpoint_method, get_method

    check_output_file(args.out, args.overwrite)
    if not args.source.is_file():
        raise UserInputError(f"{args.source}: reference checkpoint not found")
    method = checkpoint_method(args.source)
    if method not in IMPORTING_METHOD_NAMES:
        raise UserInputError(f"{args.source}: a {method} checkpoint, which has no reference format to import")
    checkpoint = get_method(method).import_reference(args.source, args.out, {
        "backbone": args.backbone, "layers": args.layers, "image_size": args.image_size,
        "training_data": args.training_data})
    print(f"wrote {args.out} ({sum(t.numel() for t in checkpoint.tensors.values())} learned values, {method})")
    return 0
