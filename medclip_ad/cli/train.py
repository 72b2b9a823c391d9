"""`medclip-ad train`: train any trained method (the published recipe by default), alone or under torchrun."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medclip_ad.cli.detector_options import add_backbone_arguments, detector_config
from medclip_ad.methods import DEFAULT_METHOD
from medclip_ad.methods.registry import METHODS, TRAINED_METHOD_NAMES, get_trainer

HELP = "train a method (anomalyclip prompts, adaclip weights, the text-only rwda head) with its published recipe"
# Recipe options: None means "not given", so each method's own default applies.
RECIPE_OPTIONS: tuple[str, ...] = ("epochs", "batch_size", "learning_rate", "seed", "local_weight",
                                   "image_labels_only", "workers", "object_word", "prompts_per_class", "layers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=TRAINED_METHOD_NAMES, default=DEFAULT_METHOD,
                        help="; ".join(f"{name}: {METHODS[name].summary}" for name in TRAINED_METHOD_NAMES))
    parser.add_argument("--manifest", type=Path, nargs="+", metavar="M",
                        help="manifests from `medclip-ad prepare-data` (their test splits are the training data); "
                             "methods that train on images")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="run folder: epoch_NNN.safetensors (resumable), the method's final checkpoint (the last "
                             "epoch; " + ", ".join(f"{name}: {get_trainer(name).final_checkpoint}"
                                                   for name in TRAINED_METHOD_NAMES)
                             + "), best.safetensors (with --val-manifest), train_log.csv")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    parser.add_argument("--resume", type=Path, metavar="CKPT",
                        help="continue from an epoch_NNN.safetensors of the same method, exactly")
    parser.add_argument("--init", type=Path, metavar="CKPT",
                        help="start from the weights of a method checkpoint (this project's or the reference format, "
                             "e.g. released prompts to fine-tune), with a fresh optimiser")
    parser.add_argument("--val-manifest", type=Path, metavar="M",
                        help="after each epoch score a held-out manifest with the method's validation metric ("
                             + ", ".join(f"{name}: {get_trainer(name).validation_metric}"
                                         for name in TRAINED_METHOD_NAMES) + ") and keep the best epoch")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log each step's loss parts and learning rate for TensorBoard, in --out/tensorboard "
                             "(needs the [tensorboard] extra)")
    recipe = parser.add_argument_group("recipe (defaults: the method's published one)")
    for name in ("epochs", "batch_size", "seed", "workers"):
        recipe.add_argument(f"--{name.replace('_', '-')}", type=int, help=_defaults(name))
    recipe.add_argument("--lr", dest="learning_rate", type=float, help=_defaults("learning_rate"))
    recipe.add_argument("--local-weight", type=float, help=_defaults("local_weight"))
    recipe.add_argument("--image-labels-only", action="store_true", default=None,
                        help="train the image-level loss alone (data with labels but no masks)")
    recipe.add_argument("--object-word", help=_defaults("object_word"))
    recipe.add_argument("--prompts-per-class", type=int, help=_defaults("prompts_per_class"))
    add_backbone_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.training import distributed
    from medclip_ad.training.runs import check_training_data, train_method

    trainer = check_training_data(args.method, bool(args.manifest))
    recipe = trainer.recipe_with(args.method, {name: getattr(args, name) for name in RECIPE_OPTIONS})
    manifests = [Manifest.load(path) for path in args.manifest or []]
    val_manifest = Manifest.load(args.val_manifest) if args.val_manifest else None
    options = {"resume": args.resume, "init": args.init, "val_manifest": val_manifest, "overwrite": args.overwrite,
               "tensorboard": args.tensorboard}
    if distributed.under_torchrun():  # one rank of a data-parallel run; rank 0 reports
        joined = distributed.start(args.device)
        try:
            result = distributed.train_method_data_parallel(args.method, detector_config(args), manifests, args.out,
                                                            recipe, **options)
        finally:
            if joined:
                distributed.stop()
        if os.environ["RANK"] != "0":
            return 0
    else:
        result = train_method(args.method, detector_config(args), manifests, args.out, recipe, **options)
    losses = ", ".join(f"{loss:.4f}" for loss in result.epoch_losses)
    print(f"{args.method}: {result.final_checkpoint} (epoch losses: {losses})"
          + (f"; best epoch: {result.best_checkpoint}" if result.best_checkpoint else ""))
    return 0


def _defaults(option: str) -> str:
    """Each trained method's default for a recipe option, for --help."""
    values = []
    for name in TRAINED_METHOD_NAMES:
        trainer = get_trainer(name)
        value: object = trainer.recipe()
        for part in dict(trainer.option_fields).get(option, option).split("."):
            value = getattr(value, part, None)
        if value is not None:
            values.append(f"{name}: {value}")
    return "default " + ", ".join(values)
