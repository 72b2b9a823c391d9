"""`medclip-ad train`: learn AnomalyCLIP prompts on auxiliary data (the published recipe by default),
or the text-only `rwda` head (no images: `--method rwda`), or AdaCLIP (`--method adaclip`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from medclip_ad.cli.detector_options import add_backbone_arguments, detector_config
from medclip_ad.config import AdaCLIPTrainingConfig, RandomWordSettings, RandomWordTrainingConfig, TrainingConfig
from medclip_ad.errors import UserInputError

HELP = "train anomalyclip prompts or adaclip weights on dataset manifests, or the rwda head on text alone"
DEFAULTS = TrainingConfig()
RWDA_DEFAULTS = RandomWordTrainingConfig()
ADACLIP_DEFAULTS = AdaCLIPTrainingConfig()
TRAINED_METHODS = ("anomalyclip", "rwda", "adaclip")
Value = TypeVar("Value", int, float)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=TRAINED_METHODS, default="anomalyclip",
                        help="anomalyclip: prompts from images (needs --manifest); rwda: a head from text alone; "
                             "adaclip: hybrid prompts and projections from images (needs --manifest)")
    parser.add_argument("--manifest", type=Path, nargs="+", metavar="M",
                        help="manifests from `medclip-ad prepare-data` (their test splits are the training data); "
                             "anomalyclip and adaclip")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="run folder: epoch_NNN.safetensors, prompts.safetensors (last epoch), train_log.csv; "
                             "rwda: rwda_head.safetensors, train_log.csv; adaclip: epoch_NNN.safetensors, "
                             "adaclip.safetensors (last epoch), train_log.csv")
    recipe = parser.add_argument_group("recipe (defaults: the published one)")
    recipe.add_argument("--epochs", type=int, help=f"default {DEFAULTS.epochs} (rwda: {RWDA_DEFAULTS.epochs})")
    recipe.add_argument("--batch-size", type=int,
                        help=f"default {DEFAULTS.batch_size} (rwda: {RWDA_DEFAULTS.batch_size})")
    recipe.add_argument("--lr", type=float,
                        help=f"default {DEFAULTS.learning_rate} (rwda: {RWDA_DEFAULTS.learning_rate})")
    recipe.add_argument("--seed", type=int, default=DEFAULTS.seed)
    recipe.add_argument("--local-weight", type=float, default=DEFAULTS.local_weight,
                        help="weight of the focal + dice term against the image cross-entropy")
    recipe.add_argument("--image-labels-only", action="store_true", help="train the global loss alone")
    recipe.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data-loading processes")
    parser.add_argument("--resume", type=Path, metavar="CKPT",
                        help="continue from an epoch_NNN.safetensors of the same method (anomalyclip, adaclip)")
    rwda = parser.add_argument_group("rwda (text only)")
    rwda.add_argument("--prompts-per-class", type=int, default=RWDA_DEFAULTS.prompts.prompts_per_class,
                      help="random-word prompts encoded for each of normal and abnormal")
    adaclip = parser.add_argument_group(
        f"adaclip (needs --manifest; recipe defaults: epochs {ADACLIP_DEFAULTS.epochs}, batch "
        f"{ADACLIP_DEFAULTS.batch_size}, lr {ADACLIP_DEFAULTS.learning_rate}; --layers: its feature layers, default "
        f"{' '.join(map(str, ADACLIP_DEFAULTS.feature_layers))})")
    adaclip.add_argument("--object-word", default=ADACLIP_DEFAULTS.object_word,
                         help="the object word of adaclip's class-aware prompt ensemble")
    add_backbone_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.method == "rwda":
        return _train_rwda(args)
    if args.method == "adaclip":
        return _train_adaclip(args)
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.methods.anomalyclip.training import train_prompts

    if not args.manifest:
        raise UserInputError("--manifest: anomalyclip training needs at least one dataset manifest "
                             "(--method rwda trains from text alone)")
    manifests = [Manifest.load(path) for path in args.manifest]
    config = TrainingConfig(epochs=_given(args.epochs, DEFAULTS.epochs),
                            batch_size=_given(args.batch_size, DEFAULTS.batch_size),
                            learning_rate=_given(args.lr, DEFAULTS.learning_rate), seed=args.seed,
                            local_weight=args.local_weight, image_labels_only=args.image_labels_only,
                            workers=args.workers)
    run_result = train_prompts(detector_config(args), manifests, args.out, config, resume=args.resume)
    print(f"prompts: {run_result.final_checkpoint} (epoch losses: "
          f"{', '.join(f'{loss:.4f}' for loss in run_result.epoch_losses)})")
    return 0


def _train_rwda(args: argparse.Namespace) -> int:
    from medclip_ad.methods.rwda.training import train_random_word_head

    if args.manifest or args.resume:
        raise UserInputError(f"{'--manifest' if args.manifest else '--resume'}: not used by --method rwda, "
                             f"which trains from text alone in one go")
    if args.prompts_per_class < 1:
        raise UserInputError(f"--prompts-per-class {args.prompts_per_class}: must be at least 1")
    config = RandomWordTrainingConfig(
        epochs=_given(args.epochs, RWDA_DEFAULTS.epochs), batch_size=_given(args.batch_size, RWDA_DEFAULTS.batch_size),
        learning_rate=_given(args.lr, RWDA_DEFAULTS.learning_rate), seed=args.seed,
        prompts=RandomWordSettings(prompts_per_class=args.prompts_per_class))
    run_result = train_random_word_head(detector_config(args), args.out, config)
    print(f"rwda head: {run_result.final_checkpoint} (epoch losses: "
          f"{', '.join(f'{loss:.4f}' for loss in run_result.epoch_losses)})")
    return 0


def _train_adaclip(args: argparse.Namespace) -> int:
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.methods.adaclip.training import train_adaclip

    if not args.manifest:
        raise UserInputError("--manifest: adaclip training needs at least one dataset manifest")
    if args.local_weight != DEFAULTS.local_weight:
        raise UserInputError("--local-weight: not used by --method adaclip, whose loss terms all have weight 1")
    config = AdaCLIPTrainingConfig(
        epochs=_given(args.epochs, ADACLIP_DEFAULTS.epochs),
        batch_size=_given(args.batch_size, ADACLIP_DEFAULTS.batch_size),
        learning_rate=_given(args.lr, ADACLIP_DEFAULTS.learning_rate), seed=args.seed, workers=args.workers,
        object_word=args.object_word, image_labels_only=args.image_labels_only,
        feature_layers=tuple(args.layers or ADACLIP_DEFAULTS.feature_layers))
    manifests = [Manifest.load(path) for path in args.manifest]
    run_result = train_adaclip(detector_config(args), manifests, args.out, config, resume=args.resume)
    print(f"adaclip weights: {run_result.final_checkpoint} (epoch losses: "
          f"{', '.join(f'{loss:.4f}' for loss in run_result.epoch_losses)})")
    return 0


def _given(value: Value | None, default: Value) -> Value:
    """An option's value, or the chosen method's default when the user left it out."""
    return default if value is None else value
