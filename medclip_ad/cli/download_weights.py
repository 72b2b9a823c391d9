"""`medclip-ad download-weights`: fetch OpenAI's CLIP release once, verify its sha256, keep it in the cache.

The default is the release the published numbers use (ViT-L/14@336px) from OpenAI's official URL, whose
folder name is the file's sha256. `--url` takes a mirror of that same file (the digest is still checked).
Afterwards `--clip-weights openai` finds it in the cache without the network.
"""

from __future__ import annotations

import argparse

from medclip_ad.constants import DEFAULT_BACKBONE

HELP = "download OpenAI's CLIP weights (ViT-L/14@336px by default), verify their sha256 and cache them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_BACKBONE,
                        help="open_clip model name of the OpenAI release (default: the published one)")
    parser.add_argument("--url", help="a mirror of the official file (default: OpenAI's official URL)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medclip_ad.modeling.weights_download import cached_path, download_release, official_release

    release = official_release(args.model)
    if cached_path(release).is_file():
        print(f"already cached: {cached_path(release)} (sha256 {release.sha256})")
        return 0
    print(f"downloading {args.url or release.url}")
    with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=release.filename) as bar:
        path = download_release(release, url=args.url, progress=bar.update)
    print(f"verified sha256 {release.sha256}\ncached: {path}\n--clip-weights openai now uses it")
    return 0
