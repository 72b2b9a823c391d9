"""The published AnomalyCLIP numbers that every report puts beside ours.

They are stated once, in the package data file `medclip_ad/configs/published_anomalyclip.json` (percent,
with their source); this module turns them into fractions keyed like our metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

PUBLISHED_FILE = "published_anomalyclip.json"


@dataclass(frozen=True)
class PublishedNumbers:
    """A paper's table: where it comes from, and per dataset its metrics as fractions like ours."""

    source: str
    datasets: dict[str, dict[str, float]]


def published_anomalyclip() -> PublishedNumbers:
    """The published AnomalyCLIP numbers, read from the one file that states them (percent -> fractions)."""
    text = resources.files("medclip_ad.configs").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    table = json.loads(text)
    return PublishedNumbers(source=table["source"], datasets={
        dataset: {metric: round(value / 100, 6) for metric, value in metrics.items()}
        for dataset, metrics in table["datasets"].items()})
