"""The worklist on the page: a table of the results folder's cases in a chosen reading order, a click or
one key (N next, P previous) to move through it, and the export of every review as CSV.

The chosen case is kept as its folder in the session, so the order can change under it; the sidebar's
case opening reads it from here.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from medclip_viewer.case_cache import read_ahead
from medclip_viewer.cases import Catalogue, ResultFolder
from medclip_viewer.confinement import Scope
from medclip_viewer.display_text import plain
from medclip_viewer.review_capture import REVIEW_FILE, reviews_csv
from medclip_viewer.state import keep_hidden_widget_values
from medclip_viewer.worklist import NOT_REVIEWED, ORDERS, SCORES_FILE, WorklistRow, listed_folders, neighbour, \
    ordered, read_row

KEY_WORKLIST_CURRENT = "worklist.current"
# The reading order's select box, in the pop-over: its value is kept while the pop-over is closed (not drawn).
KEY_WORKLIST_ORDER = "worklist.order"
KEY_WORKLIST_TABLE = "worklist.table"
KEY_WORKLIST_NEXT = "worklist.next"
KEY_WORKLIST_PREVIOUS = "worklist.previous"
KEY_WORKLIST_EXPORT = "worklist.export"
KEY_WORKLIST_BAR = "worklist.bar"
KEY_WORKLIST_POPOVER = "worklist.popover"
_KEY_ROWS = "worklist.rows"
_KEY_SCOPE = "worklist.scope"
_KEY_NEUTRAL = "worklist.neutral_names"
_KEY_TABLE_GENERATION = "worklist.table_generation"
NEXT_SHORTCUT = "N"
PREVIOUS_SHORTCUT = "P"
TABLE_HEIGHT_PX = 178
# Wide enough for every column (case, score, flag, percentile, findings, review) inside the pop-over.
TABLE_WIDTH_PX = 600


def is_worklist(found: Catalogue) -> bool:
    """A folder of several scored cases is read as a worklist; a single case or studies are not."""
    return len(found.items) > 1 and all(isinstance(item, ResultFolder) for item in found.items)


def forget_worklist() -> None:
    """No worklist on the page once another kind of location is open."""
    st.session_state.pop(_KEY_ROWS, None)


def worklist_choice(found: Catalogue) -> ResultFolder:
    """The worklist's current case (the first in reading order until the reader moves)."""
    folders = {item.path.resolve() for item in found.items}
    folders.update(listed_folders(found.origin))
    listing = sorted(folders)
    rows = ordered([_row(folder) for folder in listing], ORDERS[_order_label()])
    st.session_state[_KEY_ROWS] = rows
    st.session_state[_KEY_SCOPE] = found.scope
    st.session_state[_KEY_NEUTRAL] = {folder: f"case {rank}" for rank, folder in enumerate(listing, start=1)}
    current = st.session_state.get(KEY_WORKLIST_CURRENT)
    if current not in {str(row.folder) for row in rows}:
        current = str(rows[0].folder)
        st.session_state[KEY_WORKLIST_CURRENT] = current
    return ResultFolder(Path(current))


def _order_label() -> str:
    return st.session_state.get(KEY_WORKLIST_ORDER, next(iter(ORDERS)))


def _row(folder: Path) -> WorklistRow:
    """Rows are re-read only when the case's scores.json or review.json changes."""
    return _cached_row(str(folder), _mtime(folder / SCORES_FILE), _mtime(folder / REVIEW_FILE))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(max_entries=10_000, show_spinner=False)
def _cached_row(folder: str, scores_mtime: int, review_mtime: int) -> WorklistRow:
    return read_row(Path(folder))


def worklist_table(show_patient: bool) -> None:
    """Where the reader is in the worklist, next/previous, the table (in a pop-over, so the image stays
    on the first screen) and the review export, in one row; nothing when no worklist is open. While
    identifiers are hidden, cases are called by their place in the folder, never by their (file-derived)
    names."""
    keep_hidden_widget_values((KEY_WORKLIST_ORDER,))
    rows: list[WorklistRow] | None = st.session_state.get(_KEY_ROWS)
    if not rows:
        return
    current = Path(st.session_state[KEY_WORKLIST_CURRENT])
    reviewed = sum(1 for row in rows if row.review)
    position = next((n for n, row in enumerate(rows, start=1) if row.folder == current), 0)
    bar = st.container(horizontal=True, vertical_alignment="center", key=KEY_WORKLIST_BAR)
    bar.markdown(f"**Worklist**: case {position} of {len(rows)}, {reviewed} reviewed", width="content")
    bar.button("Previous", key=KEY_WORKLIST_PREVIOUS, shortcut=PREVIOUS_SHORTCUT, on_click=step_worklist,
               args=(-1,), help="Previous case (key P)")
    bar.button("Next", key=KEY_WORKLIST_NEXT, shortcut=NEXT_SHORTCUT, on_click=step_worklist, args=(1,),
               help="Next case (key N)")
    # built only while open: the grid is the page's costliest element, and it would be drawn before the image
    table = bar.popover("Worklist table", key=KEY_WORKLIST_POPOVER, on_change="rerun")
    text, _ = reviews_csv([row.folder for row in rows])
    bar.download_button("Export reviews (CSV)", text.encode("utf-8"), file_name="reviews.csv", mime="text/csv",
                        key=KEY_WORKLIST_EXPORT, on_click="ignore", disabled=reviewed == 0)
    if not table.open:
        return
    with table:
        st.selectbox("Reading order", list(ORDERS), key=KEY_WORKLIST_ORDER)
        neutral = st.session_state.get(_KEY_NEUTRAL, {})
        names = {row.folder: row.case if show_patient else neutral.get(row.folder, "case") for row in rows}
        st.dataframe([row.as_table_row(row.folder == current, names[row.folder]) for row in rows], hide_index=True,
                     height=TABLE_HEIGHT_PX, width=TABLE_WIDTH_PX, on_select=_select, selection_mode="single-row",
                     key=f"{KEY_WORKLIST_TABLE}.{st.session_state.get(_KEY_TABLE_GENERATION, 0)}",
                     column_config=_COLUMNS)
        for row in rows:
            if row.problem:
                st.warning(plain(f"{names[row.folder]}: {row.problem}"), icon=None)


_COLUMNS = {
    "": st.column_config.TextColumn("", width=20),
    "score": st.column_config.NumberColumn("score", format="%.4f"),
    "percentile": st.column_config.NumberColumn("percentile", format="%.1f"),
    "review": st.column_config.TextColumn("review", help=f"agree / disagree / uncertain, or {NOT_REVIEWED}"),
}


def step_worklist(step: int) -> None:
    """Move `step` cases along the reading order (a callback: runs before the page is redrawn)."""
    rows = st.session_state.get(_KEY_ROWS) or []
    current = st.session_state.get(KEY_WORKLIST_CURRENT)
    target = neighbour(rows, Path(current) if current else None, step)
    if target is not None:
        st.session_state[KEY_WORKLIST_CURRENT] = str(target)


# How far ahead and back the worklist is read: the viewer prepares the next and previous cases, so after a
# move the new neighbours (two away before it) are ready too.
READ_AHEAD_STEPS = (1, -1, 2, -2)


def worklist_neighbours(steps: tuple[int, ...]) -> list[tuple[int, Path, Scope]]:
    """The worklist's cases `steps` away from the current one in reading order (each once, never the current
    one), with the scope they are read in; none without a worklist."""
    rows = st.session_state.get(_KEY_ROWS)
    current = st.session_state.get(KEY_WORKLIST_CURRENT)
    if not rows or current is None:
        return []
    found: list[tuple[int, Path, Scope]] = []
    for step in steps:
        target = neighbour(rows, Path(current), step)
        if target is not None and target != Path(current) and all(target != known for _, known, _ in found):
            found.append((step, target, st.session_state[_KEY_SCOPE]))
    return found


def read_ahead_neighbours() -> None:
    """Start opening the cases around the current one in the background, so N and P find them ready."""
    for _, folder, scope in worklist_neighbours(READ_AHEAD_STEPS):
        read_ahead(folder, scope)


def worklist_folders() -> list[Path]:
    """The worklist's case folders in reading order (none without a worklist)."""
    return [row.folder for row in st.session_state.get(_KEY_ROWS) or []]


def open_worklist_case(folder: Path) -> bool:
    """Make `folder` the current case if it is in the worklist (a callback, like `step_worklist`)."""
    rows = st.session_state.get(_KEY_ROWS) or []
    if all(row.folder != folder for row in rows):
        return False
    st.session_state[KEY_WORKLIST_CURRENT] = str(folder)
    return True


def _select() -> None:
    """A clicked row becomes the current case; the table is then redrawn without a lingering selection."""
    generation = st.session_state.get(_KEY_TABLE_GENERATION, 0)
    selection = st.session_state[f"{KEY_WORKLIST_TABLE}.{generation}"].selection.rows
    rows = st.session_state.get(_KEY_ROWS) or []
    if selection and selection[0] < len(rows):
        st.session_state[KEY_WORKLIST_CURRENT] = str(rows[selection[0]].folder)
    st.session_state[_KEY_TABLE_GENERATION] = generation + 1
