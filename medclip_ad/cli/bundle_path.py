"""`medclip-ad bundle-path`: where the installed MONAI bundle is, for `python -m monai.bundle run`.

    BUNDLE=$(medclip-ad bundle-path)
    python -m monai.bundle run --config_file $BUNDLE/configs/inference.json --bundle_root $BUNDLE ...
"""

from __future__ import annotations

import argparse

from medclip_ad.resources import bundle_dir

HELP = "print the folder of the installed MONAI bundle (configs/, docs/, models/)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the one bundle this package ships."""


def run(args: argparse.Namespace) -> int:
    print(bundle_dir())
    return 0
