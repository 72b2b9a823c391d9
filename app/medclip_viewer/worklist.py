"""The worklist of a results folder: one row per scored case with what a reader triages by (score,
calibrated flag and percentile, number of findings) and whether it has been reviewed.

Rows come from each case's scores.json and review.json; a run-level `results.csv` (written by
`medclip-ad infer`) adds the cases it lists by folder, as long as they lie inside the results folder.
Reading is cheap (JSON only, no volumes), so a folder of hundreds of cases lists in well under a second.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medclip_ad.errors import UserInputError
from medclip_ad.io.json_documents import read_json_file

from medclip_viewer.review_capture import load_review

RESULTS_TABLE = "results.csv"
SCORES_FILE = "scores.json"
ORDERS: dict[str, str] = {
    "score, highest first": "score",
    "unreviewed first, then score": "unreviewed",
    "case name": "case",
}
NOT_REVIEWED = "not reviewed"


@dataclass(frozen=True)
class WorklistRow:
    """One case of the worklist; `None` where the case has no such value (no calibration, no score)."""

    folder: Path
    case: str
    score: float | None
    flagged: bool | None
    percentile: float | None
    findings: int | None
    review: str
    problem: str = ""

    def as_table_row(self, current: bool, name: str) -> dict:
        """The row as shown, the case called `name`: plain values, never markup (case names come from files)."""
        return {"": "▶" if current else "", "case": name, "score": self.score,
                "flag": None if self.flagged is None else ("flagged" if self.flagged else "-"),
                "percentile": self.percentile, "findings": self.findings, "review": self.review or NOT_REVIEWED}


def read_row(folder: Path) -> WorklistRow:
    """One case folder's row; an unreadable scores.json or review.json shows as a problem on its row."""
    try:
        document = read_json_file(folder / SCORES_FILE, "scores.json")
        score = float(document["score"])
    except UserInputError:
        return WorklistRow(folder, folder.name, None, None, None, None, "", "unreadable scores.json")
    except (ValueError, KeyError, TypeError) as exc:
        return WorklistRow(folder, folder.name, None, None, None, None, "", f"unreadable scores.json ({exc})")
    components = document.get("components")
    try:
        review = load_review(folder)
        verdict, problem = (review.verdict if review else ""), ""
    except UserInputError as error:
        verdict, problem = "", str(error)
    return WorklistRow(folder=folder, case=str(document.get("case", folder.name)), score=score,
                       flagged=document.get("flagged"), percentile=document.get("percentile"),
                       findings=len(components) if isinstance(components, list) else None, review=verdict,
                       problem=problem)


def listed_folders(results_folder: Path) -> list[Path]:
    """Case folders named by the folder's results.csv that lie inside it and hold a scores.json."""
    table = results_folder / RESULTS_TABLE
    if not table.is_file():
        return []
    root = results_folder.resolve()
    folders = []
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            for record in csv.DictReader(handle):
                candidate = Path(record.get("path") or "")
                candidate = (candidate if candidate.is_absolute() else results_folder / candidate).resolve()
                if candidate.is_relative_to(root) and (candidate / SCORES_FILE).is_file():
                    folders.append(candidate)
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return folders


def ordered(rows: list[WorklistRow], order: str) -> list[WorklistRow]:
    """Rows in the reading order chosen (one of ORDERS' values); unscored rows go last."""
    def score_key(row: WorklistRow) -> float:
        return -row.score if row.score is not None else float("inf")

    if order == "case":
        return sorted(rows, key=lambda row: row.case)
    if order == "unreviewed":
        return sorted(rows, key=lambda row: (bool(row.review), score_key(row), row.case))
    return sorted(rows, key=lambda row: (score_key(row), row.case))


def neighbour(rows: list[WorklistRow], current: Path | None, step: int) -> Path | None:
    """The folder `step` rows after `current` (wrapping round), the first row when nothing is current."""
    if not rows:
        return None
    folders = [row.folder for row in rows]
    if current not in folders:
        return folders[0]
    return folders[(folders.index(current) + step) % len(folders)]
