"""`medclip-ad import-checkpoint`: convert a reference prompt checkpoint to this project's format."""

from __future__ import annotations

import argparse
from pathlib import Path

from medclip_ad.constants import DEFAULT_BACKBONE, DEFAULT_LAYERS, IMAGE_SIZE
from medclip_ad.errors import UserInputError

HELP = "convert a reference AnomalyCLIP prompt checkpoint ({'prompt_learner': ...}) to .safetensors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="reference checkpoint (.pth), read with weights_only=True")
    parser.add_argument("--out", type=Path, required=True, help="destination .safetensors file")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="backbone the prompts were trained with")
    parser.add_argument("--layers", type=int, nargs="+", default=list(DEFAULT_LAYERS),
                        help="layers the prompts were trained with")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--training-data", default="unknown", help="what the prompts were trained on, e.g. mvtec")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from medclip_ad.methods.checkpoint import file_sha256, load_prompt_checkpoint, save_prompt_checkpoint

    if args.out.exists() and not args.overwrite:
        raise UserInputError(f"{args.out}: already exists (pass --overwrite to replace it)")
    checkpoint = load_prompt_checkpoint(args.source)
    metadata = {"method": "anomalyclip", "backbone": args.backbone, "n_ctx": checkpoint.n_ctx,
                "depth": checkpoint.depth, "t_n_ctx": checkpoint.deep_length, "layers": list(args.layers),
                "image_size": args.image_size, "training_data": args.training_data,
                "imported_from": str(args.source), "imported_sha256": file_sha256(args.source)}
    save_prompt_checkpoint(args.out, checkpoint.tensors, metadata)
    print(f"wrote {args.out} ({sum(t.numel() for t in checkpoint.tensors.values())} learned values, "
          f"text width {checkpoint.text_width})")
    return 0
