"""`--config FILE`: a subcommand's options from a YAML or JSON file, with the same names as its flags.

    # infer.yaml                              medclip-ad infer --config infer.yaml --device cuda
    inputs: [scans/]
    out: results/
    clip-weights: openai                      (clip_weights works too)
    aggregation: topk_mean

The file supplies defaults; flags given on the command line win. Keys are checked against the
subcommand's options before anything runs: an unknown key, a value outside an option's choices or a file
that is not a mapping is one error line naming the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from medclip_ad.errors import UserInputError

CONFIG_OPTION = "--config"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(CONFIG_OPTION, type=Path, metavar="FILE", dest="config_file",
                        help="YAML or JSON file of this command's options (keys as the flags, without --); "
                             "flags given here win")


def config_file_argument(argv: list[str]) -> Path | None:
    """The FILE of `--config FILE` or `--config=FILE` among a subcommand's arguments, if any."""
    for index, token in enumerate(argv):
        if token == CONFIG_OPTION and index + 1 < len(argv):
            return Path(argv[index + 1])
        if token.startswith(f"{CONFIG_OPTION}="):
            return Path(token.split("=", 1)[1])
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's mapping; YAML for .yaml/.yml, JSON otherwise (YAML reads JSON too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UserInputError(f"{CONFIG_OPTION} {path}: cannot read ({error.strerror or error})") from error
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:  # any parser error: the file is not valid YAML/JSON
        kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
        raise UserInputError(f"{CONFIG_OPTION} {path}: not valid {kind} ({str(error).splitlines()[0]})") from error
    if not isinstance(values, dict):
        raise UserInputError(f"{CONFIG_OPTION} {path}: must hold a mapping of option names to values")
    return values


def apply_config_file(parser: argparse.ArgumentParser, path: Path) -> None:
    """Make the file's values the subcommand parser's defaults (so command-line flags still win)."""
    values = read_config_file(path)
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config_file")}
    defaults = {}
    for key, value in values.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in actions:
            known = ", ".join(sorted(name.replace("_", "-") for name in actions))
            raise UserInputError(f"{CONFIG_OPTION} {path}: unknown option {key!r} for `{parser.prog}` (known: {known})")
        action = actions[dest]
        defaults[dest] = _converted(action, value, path, key)
        action.required = False
        if not action.option_strings and action.nargs == "+":
            action.nargs = "*"  # a positional the file supplies may be left out on the command line
        elif not action.option_strings and action.nargs is None:
            action.nargs = "?"
    parser.set_defaults(**defaults)


def _converted(action: argparse.Action, value: Any, path: Path, key: str) -> Any:
    """The value as the flag would have produced it: each item through the option's type, checked against choices."""
    if action.nargs == 0:  # a switch (--overwrite): true or false
        if not isinstance(value, bool):
            raise UserInputError(f"{CONFIG_OPTION} {path}: {key}: a switch takes true or false, not {value!r}")
        return value
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    items = value if isinstance(value, list) else [value]
    if not many and isinstance(value, list):
        raise UserInputError(f"{CONFIG_OPTION} {path}: {key}: takes one value, not a list")
    converted = []
    for item in items:
        if action.type is not None and item is not None and not isinstance(item, bool):
            try:
                item = action.type(str(item)) if isinstance(item, (str, int, float)) else item
            except (TypeError, ValueError) as error:
                raise UserInputError(f"{CONFIG_OPTION} {path}: {key}: {item!r} is not valid ({error})") from error
        if action.choices is not None and item not in action.choices:
            raise UserInputError(f"{CONFIG_OPTION} {path}: {key}: {item!r} is not one of "
                                 f"{', '.join(map(str, action.choices))}")
        converted.append(item)
    return converted if many else converted[0]
