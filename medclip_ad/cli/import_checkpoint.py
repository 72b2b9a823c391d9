"""`medclip-ad import-checkpoint`: convert a reference checkpoint to this project's format.

The method is told by the file's keys: AnomalyCLIP's reference saves `{"prompt_learner": ...}`,
AdaCLIP's (and its released weights) a flat `clip_model.*` state dict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medclip_ad.config import ADACLIP_LAYERS
from medclip_ad.constants import DEFAULT_BACKBONE, DEFAULT_LAYERS, IMAGE_SIZE
from medclip_ad.errors import UserInputError

HELP = ("convert a reference checkpoint to .safetensors: AnomalyCLIP prompts ({'prompt_learner': ...}) or "
        "AdaCLIP weights (its flat clip_model.* state dict, as released)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="reference checkpoint (.pth), read with weights_only=True")
    parser.add_argument("--out", type=Path, required=True, help="destination .safetensors file")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="backbone the checkpoint was trained with")
    parser.add_argument("--layers", type=int, nargs="+",
                        help="layers the checkpoint was trained with (default: anomalyclip "
                             f"{' '.join(map(str, DEFAULT_LAYERS))}; adaclip {' '.join(map(str, ADACLIP_LAYERS))}, "
                             "the reference's for a 24-block ViT)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--training-data", default="unknown", help="what it was trained on, e.g. mvtec")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from medclip_ad.io.writers import check_output_file
    from medclip_ad.methods.adaclip.checkpoint import read_reference_adaclip
    from medclip_ad.methods.checkpoint import (
        file_sha256,
        load_prompt_checkpoint,
        read_reference_file,
        reference_method,
        save_prompt_checkpoint,
    )

    check_output_file(args.out, args.overwrite)
    if not args.source.is_file():
        raise UserInputError(f"{args.source}: reference checkpoint not found")
    provenance = {"backbone": args.backbone, "image_size": args.image_size, "training_data": args.training_data,
                  "imported_from": str(args.source), "imported_sha256": file_sha256(args.source)}
    if reference_method(read_reference_file(args.source)) == "adaclip":
        checkpoint = read_reference_adaclip(args.source)
        layers = list(args.layers or ADACLIP_LAYERS)
        projections = {name.split(".")[1] for name in checkpoint.tensors if name.startswith("patch_projections.")}
        if len(layers) != len(projections):
            raise UserInputError(f"--layers {' '.join(map(str, layers))}: {args.source} has {len(projections)} "
                                 f"patch projections, one per feature layer")
        metadata = {**checkpoint.metadata, **provenance, "feature_layers": layers}
        description = "adaclip"
    else:
        checkpoint = load_prompt_checkpoint(args.source)
        metadata = {"method": "anomalyclip", "n_ctx": checkpoint.n_ctx, "depth": checkpoint.depth,
                    "t_n_ctx": checkpoint.deep_length, "layers": list(args.layers or DEFAULT_LAYERS), **provenance}
        description = f"anomalyclip, text width {checkpoint.text_width}"
    save_prompt_checkpoint(args.out, checkpoint.tensors, metadata)
    print(f"wrote {args.out} ({sum(t.numel() for t in checkpoint.tensors.values())} learned values, {description})")
    return 0
