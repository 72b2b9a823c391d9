"""A training run of any trained method by name: what `medclip-ad train` and the bundle's train configs call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError
from medclip_ad.methods.method import MethodTrainer
from medclip_ad.methods.registry import get_trainer
from medclip_ad.training.loop import (
    SingleProcess,
    TrainingProcess,
    TrainingRun,
    TrainingSession,
    check_run_folder,
    check_tensorboard,
    loop_settings,
    run_epochs,
)
from medclip_ad.training.validation import Validation


def check_training_data(method: str, manifests_given: bool) -> MethodTrainer:
    """Refuse, before anything is read, training data the method cannot use or training without what it needs."""
    trainer = get_trainer(method)
    if trainer.needs_images and not manifests_given:
        raise UserInputError(f"--manifest: {method} training needs at least one dataset manifest")
    if manifests_given and not trainer.needs_images:
        raise UserInputError(f"--manifest: not used by --method {method}, which trains without images")
    return trainer


def train_method(method: str, detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                 recipe: object | None = None, *, show_progress: bool = True, **options) -> TrainingRun:
    """Train `method` with `recipe` (default: its published one) on the test splits of `manifests` into `out_dir`.

    `options` as `start_training` takes them.
    """
    return run_epochs(start_training(method, detector, manifests, out_dir, recipe, **options), show_progress)


def start_training(method: str, detector: DetectorConfig, manifests: list[Manifest], out_dir: Path,
                   recipe: object | None = None, *, resume: Path | None = None, init: Path | None = None,
                   val_manifest: Manifest | None = None, overwrite: bool = False,
                   process: TrainingProcess = SingleProcess(), tensorboard: bool = False) -> TrainingSession:
    """A training run of `method`, ready for its epochs (what `train_method` and the bundle's trainer drive).

    `resume` continues an epoch checkpoint exactly; `init` starts from a method checkpoint's weights;
    `val_manifest` scores every epoch on held-out data and keeps the best as best.safetensors; `tensorboard`
    also logs each step's loss parts and learning rate for TensorBoard, in `out_dir/tensorboard`.
    """
    if tensorboard:
        check_tensorboard()  # before any model loads
    trainer = check_training_data(method, bool(manifests))
    out_dir = Path(out_dir)
    check_run_folder(out_dir, overwrite, resume, trainer.final_checkpoint)  # before any model loads
    detector = dataclasses.replace(detector, method=method)
    recipe = recipe if recipe is not None else trainer.recipe()
    training = trainer.start(detector, manifests, recipe)
    validation = None
    if val_manifest is not None:
        validation = Validation(detector, training.backbone, val_manifest, trainer.validation_metric)
    return TrainingSession(training, loop_settings(recipe), out_dir, resume=resume, init=init, validation=validation,
                           overwrite=overwrite, process=process, tensorboard=tensorboard)
