"""What a method declares about itself, so that nothing outside `methods/` needs to know which one it runs.

Each method folder has a `method.py` with one `Method`; `methods/registry.py` lists them by name. The
predictor, the CLI, the bundle and the viewer look a method up there and ask it, never its name.
Declarations import nothing heavy (the command line builds its options from them without torch): the
functions they name import the model stack when called.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from medclip_ad.errors import UserInputError

if TYPE_CHECKING:
    from torch import nn

    from medclip_ad.config import DetectorConfig
    from medclip_ad.datasets.manifest import Manifest
    from medclip_ad.methods.checkpoint import MethodCheckpoint
    from medclip_ad.modeling.clip_backbone import ClipBackbone
    from medclip_ad.training.loop import MethodTraining


@dataclass(frozen=True)
class MethodTrainer:
    """How a method trains: its recipe (defaults: the published one), its `MethodTraining` and its files."""

    recipe: type  # a frozen dataclass with epochs, batch_size, seed and workers among its fields
    start: Callable[[DetectorConfig, list[Manifest], Any], MethodTraining]  # (detector, manifests, recipe)
    final_checkpoint: str
    needs_images: bool  # False: trains without --manifest (and refuses one)
    validation_metric: str  # what `--val-manifest` scores each epoch by (higher is better)
    # Options whose name differs from the recipe field they set, e.g. {"layers": "feature_layers"}.
    option_fields: tuple[tuple[str, str], ...] = ()

    def recipe_with(self, method: str, options: dict[str, object]) -> Any:
        """The default recipe with the options the user gave (None: not given); one it lacks is refused.

        `layers` also chooses the detector's layers, so a recipe without a field for it ignores it.
        """
        recipe = self.recipe()
        renamed = dict(self.option_fields)
        names = {item.name for item in fields(recipe)}
        changes: dict[str, object] = {}
        for option, value in options.items():
            field = renamed.get(option, option)
            if value is None or (option == "layers" and field not in names):
                continue
            if "." in field:  # a field of a nested settings dataclass, e.g. prompts.prompts_per_class
                outer, inner = field.split(".", 1)
                changes[outer] = replace(changes.get(outer, getattr(recipe, outer)), **{inner: value})
            elif field in names:
                changes[field] = tuple(value) if isinstance(value, list) else value
            else:
                raise UserInputError(f"--{option.replace('_', '-')}: not used by --method {method}")
        return replace(recipe, **changes)


@dataclass(frozen=True)
class Method:
    """One anomaly-detection method: how its detector is built, what it trains, what its maps mean."""

    name: str
    summary: str  # one line for --help
    # Builds its detector on a loaded backbone; returns it and the checkpoint it loaded (None: none needed).
    build: Callable[[DetectorConfig, ClipBackbone], tuple[nn.Module, MethodCheckpoint | None]]
    trainer: MethodTrainer | None = None  # None: training-free
    layers_from_checkpoint: bool = False  # its map layers are fixed by its checkpoint, so --layers is refused
    # Converts its reference implementation's checkpoint (source, out, provenance) into this project's format.
    import_reference: Callable[[Path, Path, dict], MethodCheckpoint] | None = None
    # The CLIP activation it needs when --activation is auto and its checkpoint records none, and why;
    # None: the weights' own.
    activation: tuple[str, str] | None = None
