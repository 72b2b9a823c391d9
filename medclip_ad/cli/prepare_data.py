"""`medclip-ad prepare-data`: turn a downloaded dataset into a manifest (AnomalyCLIP meta.json format)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from medclip_ad.datasets import DATASETS, DatasetWarning, Manifest, prepare_dataset

HELP = "write a dataset manifest (AnomalyCLIP meta.json format) from a dataset folder as published"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=list(DATASETS), metavar="NAME",
                        help=f"dataset layout: {', '.join(DATASETS)} (see docs/datasets.md)")
    parser.add_argument("--source", type=Path, nargs="+", required=True, metavar="PATH",
                        help="the downloaded folder (colondb+endo: ColonDB and Endo folders, or their parent; "
                             "meta: the meta.json file)")
    parser.add_argument("--out", type=Path, required=True, metavar="MANIFEST.json", help="manifest to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from medclip_ad.io.writers import check_output_file

    check_output_file(args.out, args.overwrite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        manifest = prepare_dataset(args.name, args.source)
    for warning in caught:
        if issubclass(warning.category, DatasetWarning):
            print(f"medclip-ad: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    manifest.save(args.out)
    print(summary(manifest))
    print(f"wrote {args.out} (root {manifest.root})")
    return 0


def summary(manifest: Manifest) -> str:
    """Per class and split: normal and anomalous counts and how many have masks, to eyeball against the docs."""
    lines = []
    for split in ("test", "train"):
        for cls_name, entries in manifest.splits[split].items():
            anomalous = sum(entry.anomaly for entry in entries)
            masks = sum(entry.has_mask for entry in entries)
            lines.append(f"{split:5s} {cls_name}: {len(entries) - anomalous} normal, {anomalous} anomalous "
                         f"({masks} with masks)")
    return "\n".join(lines)
