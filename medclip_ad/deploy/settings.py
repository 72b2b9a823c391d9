"""What the Deploy app scores with: `settings.yaml` in the app's model folder, keys named as `infer`'s flags.

    # models/settings.yaml                    (the model folder: -m, or HOLOSCAN_MODEL_PATH)
    clip-weights: ViT-L-14-336px.pt           a file in the model folder, or openai / random:tiny
    prompts: prompts.safetensors              a file in the model folder
    calibration: calibration.json             optional: flags cases and adds the lesion Segmentation
    dicom-out: both                           the default: Parametric Map and Secondary Capture overlays

A container is configured by the files it is given, not by flags, so the model folder carries the whole
detector: weights, checkpoint, calibration and the options `infer` would take. Paths in the file are
relative to the folder and must stay inside it. Without a file the app runs `infer`'s defaults with
`--dicom-out both`. `series_rules.json` beside it replaces the series selection rules (the SDK's
DICOMSeriesSelectorOperator format).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from medclip_ad.cli.config_file import apply_config_file
from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.cli.infer import add_case_arguments, add_findings_arguments, case_options
from medclip_ad.config import CaseOptions, DetectorConfig
from medclip_ad.errors import UserInputError

SETTINGS_FILE = "settings.yaml"
SERIES_RULES_FILE = "series_rules.json"
# Grey-level image series a CLIP detector can score: every CT, MR and PET series of the study.
DEFAULT_SERIES_RULES: dict = {"selections": [{"name": "CT, MR or PET image series",
                                              "conditions": {"Modality": "(?i)^(CT|MR|PT)$"}}]}
# clip-weights values that name no file.
_NAMED_WEIGHTS = ("openai", "random:")


@dataclass(frozen=True)
class DeploySettings:
    """The detector, the per-case options and the series selection of one app run."""

    detector: DetectorConfig
    options: CaseOptions
    series_rules: dict


def load_settings(model_folder: Path) -> DeploySettings:
    """The settings in `model_folder` (its settings.yaml and series_rules.json), `infer`'s defaults without them."""
    parser = _settings_parser()
    settings_file = model_folder / SETTINGS_FILE
    if settings_file.is_file():
        apply_config_file(parser, settings_file)
    args = parser.parse_args([])
    args.prompts = _inside(model_folder, args.prompts, "prompts")
    args.calibration = _inside(model_folder, args.calibration, "calibration")
    if not args.clip_weights.startswith(_NAMED_WEIGHTS):
        args.clip_weights = _inside(model_folder, args.clip_weights, "clip-weights")
    calibration = None
    if args.calibration:
        from medclip_ad.inference.calibration import Calibration

        calibration = Calibration.load(Path(args.calibration))
        calibration.operating_point(args.operating_point)  # an unknown one is refused now
    return DeploySettings(detector=detector_config(args), options=case_options(args, calibration),
                          series_rules=_series_rules(model_folder / SERIES_RULES_FILE))


def _settings_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"medclip-ad Deploy app ({SETTINGS_FILE})", add_help=False)
    add_findings_arguments(parser)
    add_case_arguments(parser)
    add_detector_arguments(parser)
    parser.set_defaults(dicom_out="both")
    return parser


def _inside(folder: Path, value: str | Path | None, key: str) -> str | None:
    """A file the settings name, resolved against the model folder and confined to it."""
    if value is None:
        return None
    root = folder.resolve()
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise UserInputError(f"{folder / SETTINGS_FILE}: {key}: {value} lies outside the model folder {root}")
    if not path.is_file():
        raise UserInputError(f"{folder / SETTINGS_FILE}: {key}: no file {path}")
    return str(path)


def _series_rules(path: Path) -> dict:
    if not path.is_file():
        return DEFAULT_SERIES_RULES
    try:
        rules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path}: not readable JSON series selection rules ({error})") from error
    if not isinstance(rules, dict) or not isinstance(rules.get("selections"), list):
        raise UserInputError(f"{path}: series selection rules need a \"selections\" list")
    return rules
