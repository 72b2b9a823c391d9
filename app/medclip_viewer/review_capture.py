"""What a reader concluded about a case: a verdict, a note and bookmarked slices, kept in `review.json`
beside the case's scores.json.

A review names who read the case, when, and exactly which model output they read (the scores.json
provenance and score), so a later rerun of the model cannot silently re-attribute an old verdict. It is
written atomically and never touches scores.json: the model's output and the reader's opinion stay
separate files. `reviews_csv` collects every review of a results folder for audit.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from medclip_ad.errors import UserInputError
from medclip_ad.io.writers import atomic_write

REVIEW_FILE = "review.json"
REVIEW_FORMAT = "medclip-ad-review"
REVIEW_VERSION = 1
VERDICTS: tuple[str, ...] = ("agree", "disagree", "uncertain")
# Longest note kept; a reader's free text, not a report.
MAX_NOTE_CHARS = 4000
MAX_READER_CHARS = 200
# Provenance fields copied from scores.json `model` into the review: what was read.
REVIEWED_MODEL_FIELDS: tuple[str, ...] = ("method", "clip_weights", "prompts", "prompts_sha256", "layers",
                                          "image_size", "random_weights", "package_version")
CSV_COLUMNS: tuple[str, ...] = ("case", "verdict", "reader", "reviewed_at", "note", "bookmarks", "score",
                                "method", "prompts_sha256", "random_weights", "folder")
# A cell starting with one of these is a formula to a spreadsheet; notes and names are defused.
_FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Bookmark:
    """A slice the reader wants to come back to, in the plane it was seen in."""

    plane: str
    slice: int

    def label(self) -> str:
        return f"{self.plane} {self.slice}"


@dataclass(frozen=True)
class Review:
    """One reader's conclusion on one scored case."""

    case: str
    verdict: str
    reader: str
    reviewed_at: str
    note: str = ""
    bookmarks: tuple[Bookmark, ...] = ()
    score: float | None = None
    model: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        document = asdict(self)
        document["bookmarks"] = [asdict(bookmark) for bookmark in self.bookmarks]
        return {"format": REVIEW_FORMAT, "version": REVIEW_VERSION, **document}


def new_review(scores: dict, verdict: str, reader: str, note: str = "",
               bookmarks: tuple[Bookmark, ...] = ()) -> Review:
    """A review of the case described by its scores.json document, stamped now (UTC); bad input is refused
    with one line saying what is wrong."""
    if verdict not in VERDICTS:
        raise UserInputError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    reader = reader.strip()
    if not reader:
        raise UserInputError("a review needs the reader's name")
    if len(reader) > MAX_READER_CHARS or len(note) > MAX_NOTE_CHARS:
        raise UserInputError(f"the reader's name is limited to {MAX_READER_CHARS} characters and the note to "
                             f"{MAX_NOTE_CHARS}")
    model = scores.get("model") or {}
    return Review(case=str(scores.get("case", "")), verdict=verdict, reader=reader,
                  reviewed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), note=note.strip(),
                  bookmarks=tuple(sorted(set(bookmarks), key=lambda b: (b.plane, b.slice))),
                  score=float(scores["score"]) if "score" in scores else None,
                  model={name: model.get(name) for name in REVIEWED_MODEL_FIELDS if name in model})


def save_review(case_folder: Path, review: Review) -> Path:
    """Write `case_folder/review.json` atomically (a crash leaves the previous review or none, never half)."""
    path = Path(case_folder) / REVIEW_FILE
    with atomic_write(path) as temporary:
        temporary.write_text(json.dumps(review.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def load_review(case_folder: Path) -> Review | None:
    """The case's review, None when it has none; an unreadable or foreign review.json is reported (named
    by its case folder, never by a server path), not guessed at."""
    path = Path(case_folder) / REVIEW_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != REVIEW_FORMAT or document.get("verdict") not in VERDICTS:
            raise ValueError("not a medclip-ad review")
        bookmarks = tuple(Bookmark(str(b["plane"]), int(b["slice"])) for b in document.get("bookmarks", []))
        return Review(case=str(document["case"]), verdict=document["verdict"], reader=str(document["reader"]),
                      reviewed_at=str(document["reviewed_at"]), note=str(document.get("note", "")),
                      bookmarks=bookmarks, score=document.get("score"), model=dict(document.get("model") or {}))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserInputError(f"{path.parent.name}/{REVIEW_FILE}: unreadable review ({exc})") from exc


def reviews_csv(case_folders: list[Path]) -> tuple[str, list[str]]:
    """Every review among `case_folders` as CSV text (unreviewed cases are left out), and one line per
    unreadable review."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    problems: list[str] = []
    for folder in case_folders:
        try:
            review = load_review(folder)
        except UserInputError as error:
            problems.append(str(error))
            continue
        if review is None:
            continue
        writer.writerow([_cell(review.case), review.verdict, _cell(review.reader), review.reviewed_at,
                         _cell(review.note), " ".join(b.label().replace(" ", ":") for b in review.bookmarks),
                         "" if review.score is None else f"{review.score:.6g}", _cell(review.model.get("method", "")),
                         review.model.get("prompts_sha256") or "", review.model.get("random_weights", ""),
                         _cell(folder)])
    return text.getvalue(), problems


def _cell(value: object) -> str:
    """A file- or reader-derived cell as plain text: a leading formula character gets a quote before it."""
    text = str(value)
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text
