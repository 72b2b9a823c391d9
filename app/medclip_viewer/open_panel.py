"""Sidebar "Open a case": from the results folder the viewer was started with, a folder under the data
root, or an upload; then one case of what was found there, read into the session.

Unreadable inputs are reported in plain words (the package's one-line errors) and never stop the page;
server paths of the session's private upload folder are not shown to the user.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from medclip_ad.errors import UserInputError
from medclip_ad.io.readers import MAX_VOXELS, nifti_volume_count, read_case

from medclip_viewer.browse import list_entries, resolve_under_root
from medclip_viewer.cases import Catalogue, Openable, ResultFolder, catalogue, item_key, item_label, open_result
from medclip_viewer.launch import LaunchOptions
from medclip_viewer.state import (
    KEY_BROWSE,
    KEY_BROWSE_OPEN,
    KEY_CASE,
    KEY_SOURCE,
    KEY_UPLOAD,
    KEY_VOLUME_INDEX,
    ViewerSession,
)
from medclip_viewer.worklist_panel import forget_worklist, is_worklist, worklist_choice
from medclip_viewer.uploads import UPLOAD_HINT, save_upload, upload_digest

SOURCE_RESULTS = "Results folder"
SOURCE_BROWSE = "Data folder"
SOURCE_UPLOAD = "Upload"
# Problems listed under a catalogue before the rest are summarised in a count.
MAX_PROBLEMS_SHOWN = 5
# Seconds a data-root listing is reused before the folder is walked again.
LISTING_TTL_S = 30


def open_case_panel(session: ViewerSession, launch: LaunchOptions) -> None:
    """Let the user pick where from, then which case; the chosen case becomes the session's open case."""
    st.header("Open a case")
    sources = [name for name, available in ((SOURCE_RESULTS, launch.case is not None),
                                            (SOURCE_BROWSE, launch.data_root is not None),
                                            (SOURCE_UPLOAD, True)) if available]
    source = st.radio("From", sources, key=KEY_SOURCE, horizontal=True)
    if source == SOURCE_RESULTS:
        _results_source(session, launch.case)
    elif source == SOURCE_BROWSE:
        _browse_source(session, launch.data_root)
    else:
        _upload_source(session)
    found = session.catalogues.get(source)
    if found is None or not is_worklist(found):
        forget_worklist()
    if found is not None:
        _choose_case(session, found, hide_prefix=source == SOURCE_UPLOAD)


def _results_source(session: ViewerSession, folder: Path) -> None:
    st.caption(f"`{folder}`")
    if SOURCE_RESULTS not in session.catalogues:
        session.catalogues[SOURCE_RESULTS] = catalogue(folder)


@st.cache_data(ttl=LISTING_TTL_S, show_spinner=False)
def _listing(root: str) -> tuple[list[str], bool]:
    """The data root's entries, re-walked at most every LISTING_TTL_S seconds."""
    return list_entries(Path(root))


def _browse_source(session: ViewerSession, root: Path) -> None:
    entries, truncated = _listing(str(root))
    st.caption(f"Under the data root `{root}`")
    choice = st.selectbox("Folder or file", entries, key=KEY_BROWSE,
                          help="A DICOM series is a folder; a folder of results opens its cases.")
    if truncated:
        st.caption(f"Only the first {len(entries) - 1:,} entries are listed: open a sub-folder to narrow down.")
    if st.button("Open", key=KEY_BROWSE_OPEN) and choice is not None:
        try:
            location = resolve_under_root(root, choice)
        except UserInputError as error:
            st.error(str(error))
            return
        session.catalogues[SOURCE_BROWSE] = catalogue(location)


def _upload_source(session: ViewerSession) -> None:
    limit_mb = st.get_option("server.maxUploadSize")
    files = st.file_uploader("Files", accept_multiple_files=True, key=KEY_UPLOAD,
                             help=f"{UPLOAD_HINT}. Select all files of a DICOM series, or zip the series folder.")
    st.caption(f"{UPLOAD_HINT}. Up to {limit_mb} MB per file; volumes up to {MAX_VOXELS:,} voxels.")
    if not files:
        session.catalogues.pop(SOURCE_UPLOAD, None)
        return
    pairs = [(file.name, file.getvalue()) for file in files]
    folder = session.workdir / "uploads" / upload_digest(pairs)[:16]
    known = session.catalogues.get(SOURCE_UPLOAD)
    if known is not None and known.origin == folder:
        return
    try:
        session.catalogues[SOURCE_UPLOAD] = catalogue(save_upload(pairs, folder))
    except UserInputError as error:
        session.catalogues[SOURCE_UPLOAD] = Catalogue(folder, (), (str(error),))


def _choose_case(session: ViewerSession, found: Catalogue, hide_prefix: bool) -> None:
    """List the problems, pick a case (when there are several) and open it if it is not open already."""
    prefix = f"{found.origin}/" if hide_prefix else ""
    for problem in found.problems[:MAX_PROBLEMS_SHOWN]:
        st.error(f"Cannot read {problem.replace(prefix, '')}")
    if len(found.problems) > MAX_PROBLEMS_SHOWN:
        st.error(f"... and {len(found.problems) - MAX_PROBLEMS_SHOWN} more unreadable inputs")
    if not found.items:
        return
    item = worklist_choice(found) if is_worklist(found) else _listed_choice(found)
    key, volume_index = item_key(item), _volume_choice(item)
    if volume_index is not None:
        key = f"{key}#volume{volume_index}"
    if session.case_key == key:
        return
    try:
        with st.spinner(f"Reading {item.name}..."):
            if isinstance(item, ResultFolder):
                scan, result = open_result(item.path)
                session.open_case(key, scan)
                session.add_result(key, key, result)
            else:
                session.open_case(key, read_case(item, volume_index))
    except UserInputError as error:
        session.close_case()
        st.error(f"Cannot open {item.name}: {str(error).replace(prefix, '')}")


def _listed_choice(found: Catalogue) -> Openable:
    labels = [item_label(item) for item in found.items]
    label = st.selectbox("Case", labels, key=KEY_CASE) if len(labels) > 1 else labels[0]
    return found.items[labels.index(label)]


def _volume_choice(item: Openable) -> int | None:
    """For a 4-D NIfTI study, which of its volumes to open (a picker); None for everything else."""
    if isinstance(item, ResultFolder):
        return None
    count = nifti_volume_count(item)
    if count < 2:
        return None
    return int(st.number_input(f"Volume of this 4-D series (0 to {count - 1})", min_value=0, max_value=count - 1,
                               value=0, step=1, key=KEY_VOLUME_INDEX))
