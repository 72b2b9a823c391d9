"""The run-level `results.csv`: one row per case, highest score first, so a batch reads as a worklist."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from medclip_ad.io.writers import atomic_write

RESULTS_TABLE = "results.csv"
COLUMNS: tuple[str, ...] = ("case", "input", "score", "percentile", "flagged", "components", "path")
# A cell starting with one of these is a formula to a spreadsheet; names come from files, so they are defused.
_FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def write_results_table(out_dir: Path, documents: list[tuple[Path, dict]]) -> Path:
    """Write `out_dir/results.csv` from (case folder, scores.json document) pairs; columns a run without a
    calibration cannot fill (percentile, flagged, components) stay empty. `path` is the case folder relative
    to `out_dir` ("./case"), so the table stays right when the folder moves."""
    rows = sorted(documents, key=lambda item: -float(item[1]["score"]))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for folder, document in rows:
        components = document.get("components")
        writer.writerow([_text(document["case"]), _text(document["input"]), f"{float(document['score']):.6g}",
                         "" if "percentile" not in document else f"{document['percentile']:.1f}",
                         "" if "flagged" not in document else ("yes" if document["flagged"] else "no"),
                         "" if components is None else len(components),
                         f"./{Path(folder).relative_to(out_dir).as_posix()}"])
    path = Path(out_dir) / RESULTS_TABLE
    with atomic_write(path) as temporary:
        temporary.write_text(text.getvalue(), encoding="utf-8")
    return path


def _text(value: object) -> str:
    """A file-derived cell as plain text: a leading formula character gets a quote before it."""
    text = str(value)
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text
