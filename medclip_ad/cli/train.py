"""`medclip-ad train`: learn AnomalyCLIP prompts on auxiliary data (the published recipe by default)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medclip_ad.cli.detector_options import add_backbone_arguments, detector_config
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.training import TrainingConfig, train_prompts

HELP = "train prompts on one or more dataset manifests (glocal losses; image-label-only mode without masks)"
DEFAULTS = TrainingConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, nargs="+", required=True, metavar="M",
                        help="manifests from `medclip-ad prepare-data` (their test splits are the training data)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="run folder: epoch_NNN.safetensors, prompts.safetensors (last epoch), train_log.csv")
    recipe = parser.add_argument_group("recipe (defaults: the published one)")
    recipe.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    recipe.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    recipe.add_argument("--lr", type=float, default=DEFAULTS.learning_rate)
    recipe.add_argument("--seed", type=int, default=DEFAULTS.seed)
    recipe.add_argument("--local-weight", type=float, default=DEFAULTS.local_weight,
                        help="weight of the focal + dice term against the image cross-entropy")
    recipe.add_argument("--image-labels-only", action="store_true", help="train the global loss alone")
    recipe.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data-loading processes")
    parser.add_argument("--resume", type=Path, metavar="CKPT", help="continue from an epoch_NNN.safetensors")
    add_backbone_arguments(parser)


def run(args: argparse.Namespace) -> int:
    manifests = [Manifest.load(path) for path in args.manifest]
    config = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                            local_weight=args.local_weight, image_labels_only=args.image_labels_only,
                            workers=args.workers)
    run_result = train_prompts(detector_config(args), manifests, args.out, config, resume=args.resume)
    print(f"prompts: {run_result.final_checkpoint} (epoch losses: "
          f"{', '.join(f'{loss:.4f}' for loss in run_result.epoch_losses)})")
    return 0
