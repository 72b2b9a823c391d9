"""Datasets as published, turned into AnomalyCLIP-compatible manifests (`medclip-ad prepare-data`)."""

from medclip_ad.datasets.manifest import Manifest, ManifestEntry, combine_manifests
from medclip_ad.datasets.notices import DatasetWarning
from medclip_ad.datasets.registry import DATASETS, DatasetLayout, KnownCounts, prepare_dataset

__all__ = ["DATASETS", "DatasetLayout", "DatasetWarning", "KnownCounts", "Manifest", "ManifestEntry",
           "combine_manifests", "prepare_dataset"]
