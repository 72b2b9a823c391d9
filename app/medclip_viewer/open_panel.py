"""Sidebar "Open a case": from the results folder the viewer was started with, a folder under the data
root, or an upload; then one case of what was found there, read into the session.

Unreadable inputs are reported in plain words (the package's one-line errors) and never stop the page.
Files are named relative to their folder, never by server path, and every name that comes from a file
or an upload is shown as plain text (`st.text`), never as markdown a crafted name could abuse.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import streamlit as st
from medclip_ad.errors import UserInputError
from medclip_ad.io.readers import MAX_VOXELS, nifti_volume_count, read_case

from medclip_viewer.browse import BrowseListing, list_entries, resolve_under_root
from medclip_viewer.case_cache import open_result_shared
from medclip_viewer.cases import Catalogue, Openable, ResultFolder, catalogue, item_key, item_label
from medclip_viewer.confinement import Scope
from medclip_viewer.display_text import plain
from medclip_viewer.launch import LaunchOptions
from medclip_viewer.state import (
    KEY_BROWSE,
    KEY_BROWSE_OPEN,
    KEY_CASE,
    KEY_SOURCE,
    KEY_UPLOAD,
    KEY_VOLUME_INDEX,
    ViewerSession,
    session_folders,
)
from medclip_viewer.uploads import UPLOAD_HINT, folder_bytes, save_upload, upload_digest
from medclip_viewer.worklist_panel import forget_worklist, is_worklist, worklist_choice

SOURCE_RESULTS = "Results folder"
SOURCE_BROWSE = "Data folder"
SOURCE_UPLOAD = "Upload"
# Problems listed under a catalogue before the rest are summarised in a count.
MAX_PROBLEMS_SHOWN = 5
# Seconds a data-root listing is reused before the folder is walked again.
LISTING_TTL_S = 30


def open_case_panel(session: ViewerSession, launch: LaunchOptions, show_patient: bool) -> None:
    """Let the user pick where from, then which case; the chosen case becomes the session's open case.
    While patient identifiers are hidden, cases are listed by neutral labels, not by their file names."""
    st.header("Open a case")
    sources = [name for name, available in ((SOURCE_RESULTS, launch.case is not None),
                                            (SOURCE_BROWSE, launch.data_root is not None),
                                            (SOURCE_UPLOAD, True)) if available]
    source = st.radio("From", sources, key=KEY_SOURCE, horizontal=True)
    if source == SOURCE_RESULTS:
        _results_source(session, launch)
    elif source == SOURCE_BROWSE:
        _browse_source(session, launch.data_root)
    else:
        _upload_source(session, launch)
    found = session.catalogues.get(source)
    if found is None or not is_worklist(found):
        forget_worklist()
    if found is not None:
        _choose_case(session, found, show_patient)


def _results_source(session: ViewerSession, launch: LaunchOptions) -> None:
    st.text("The results folder the viewer was started with")
    if SOURCE_RESULTS not in session.catalogues:
        session.catalogues[SOURCE_RESULTS] = catalogue(launch.case, Scope.of(launch.case, launch.data_root))


@st.cache_data(ttl=LISTING_TTL_S, show_spinner=False)
def _listing(root: str) -> BrowseListing:
    """The data root's entries, re-walked at most every LISTING_TTL_S seconds."""
    return list_entries(Path(root))


def _browse_source(session: ViewerSession, root: Path) -> None:
    listing = _listing(str(root))
    st.text(f"Under the data root ({root.name})")
    choice = st.selectbox("Folder or file", listing.entries, key=KEY_BROWSE, format_func=listing.label,
                          help="A DICOM series is a folder (its file count is shown); a folder of results opens "
                               "its cases.")
    if listing.truncated:
        st.caption(f"Only the first {len(listing.entries) - 1:,} entries are listed: open a sub-folder to narrow "
                   "down.")
    if st.button("Open", key=KEY_BROWSE_OPEN) and choice is not None:
        try:
            location = resolve_under_root(root, choice)
        except UserInputError as error:
            st.error(str(error), icon=None)
            return
        session.catalogues[SOURCE_BROWSE] = catalogue(location, Scope.of(root))


def _upload_source(session: ViewerSession, launch: LaunchOptions) -> None:
    limit_mb = st.get_option("server.maxUploadSize")
    files = st.file_uploader("Files", accept_multiple_files=True, key=KEY_UPLOAD,
                             help=f"{UPLOAD_HINT}. Select all files of a DICOM series, or zip the series folder.")
    st.caption(f"{UPLOAD_HINT}. Up to {limit_mb} MB per file and {launch.max_session_upload_bytes / 2**20:,.0f} MB "
               f"in all; volumes up to {MAX_VOXELS:,} voxels.")
    uploads = session.workdir / "uploads"
    if not files:
        session.catalogues.pop(SOURCE_UPLOAD, None)
        return
    pairs = [(file.name, file.getvalue()) for file in files]
    folder = uploads / upload_digest(pairs)[:16]
    known = session.catalogues.get(SOURCE_UPLOAD)
    if known is not None and known.origin == folder:
        return
    _forget_uploads(session, uploads)  # a session keeps only its current upload on disk
    others = sum(folder_bytes(other / "uploads") for other in session_folders() if other != session.workdir)
    budget = min(launch.max_session_upload_bytes, launch.max_total_upload_bytes - others)
    scope = Scope.of(folder)
    try:
        session.catalogues[SOURCE_UPLOAD] = catalogue(save_upload(pairs, folder, budget), scope)
    except UserInputError as error:
        session.catalogues[SOURCE_UPLOAD] = Catalogue(folder, (), (scope.redact(str(error)),), scope)


def _forget_uploads(session: ViewerSession, uploads: Path) -> None:
    """Delete the session's earlier upload and close a case read from it."""
    if session.case_key and session.case_key.startswith(("result:", "study:")) and str(uploads) in session.case_key:
        session.close_case()
    session.catalogues.pop(SOURCE_UPLOAD, None)
    if uploads.is_dir():
        for earlier in uploads.iterdir():
            shutil.rmtree(earlier, ignore_errors=True)


def _choose_case(session: ViewerSession, found: Catalogue, show_patient: bool) -> None:
    """List the problems, pick a case (when there are several) and open it if it is not open already."""
    for problem in found.problems[:MAX_PROBLEMS_SHOWN]:
        st.error(plain(f"Cannot read {problem}"), icon=None)
    if len(found.problems) > MAX_PROBLEMS_SHOWN:
        st.error(f"... and {len(found.problems) - MAX_PROBLEMS_SHOWN} more unreadable inputs", icon=None)
    if not found.items:
        return
    names = [neutral_label(rank) for rank in range(len(found.items) + 1)]
    item, rank = worklist_choice_ranked(found) if is_worklist(found) else _listed_choice(found, names, show_patient)
    key, volume_index = item_key(item), _volume_choice(item)
    if volume_index is not None:
        key = f"{key}#volume{volume_index}"
    if session.case_key == key:
        return
    try:
        with st.spinner("Reading the case..."):
            if isinstance(item, ResultFolder):
                scan, result = open_result_shared(item.path, found.scope)
                session.open_case(key, scan, names[rank])
                session.add_result(key, key, result)
            else:
                session.open_case(key, read_case(item, volume_index), names[rank])
    except UserInputError as error:
        session.close_case()
        st.error(plain(f"Cannot open {names[rank]}: {found.scope.redact(str(error))}"), icon=None)


def _listed_choice(found: Catalogue, names: list[str], show_patient: bool) -> tuple[Openable, int]:
    """The case picked in the sidebar list, and its place in the list."""
    labels = [item_label(item, item.name if show_patient else names[rank]) for rank, item in enumerate(found.items)]
    label = st.selectbox("Case", labels, key=KEY_CASE) if len(labels) > 1 else labels[0]
    if len(labels) == 1:
        st.text(f"Case: {label}")
    rank = labels.index(label)
    return found.items[rank], rank


def worklist_choice_ranked(found: Catalogue) -> tuple[Openable, int]:
    """The worklist's current case, and its place in the folder's listing (after it when results.csv added it)."""
    item = worklist_choice(found)
    real = item.path.resolve()
    rank = next((n for n, known in enumerate(found.items) if known.path.resolve() == real), len(found.items))
    return item, rank


def neutral_label(rank: int) -> str:
    """How a case is called while identifiers are hidden: by its place in the list, never by its file name."""
    return f"case {rank + 1}"


def _volume_choice(item: Openable) -> int | None:
    """For a 4-D NIfTI study, which of its volumes to open (a picker); None for everything else."""
    if isinstance(item, ResultFolder):
        return None
    count = nifti_volume_count(item)
    if count < 2:
        return None
    return int(st.number_input(f"Volume of this 4-D series (0 to {count - 1})", min_value=0, max_value=count - 1,
                               value=0, step=1, key=KEY_VOLUME_INDEX))
