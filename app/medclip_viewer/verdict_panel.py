"""The reader's side of a case: agree / disagree / uncertain with the model, a note, bookmarked slices,
saved as the case's review.json (see `review_capture`).

Only cases opened from a results folder can be reviewed: the review lives beside their scores.json.
The reader's name comes from the login when the viewer runs behind one, else from a field kept for the
session. Each case has its own widgets (keyed by its folder), so a half-written note never follows the
reader to the next case. The form names the case it is for, and records only that case: a Save pressed
after the viewer had already moved on to another case (N or P, before the page followed) saves nothing
and says so, since the reader may have judged the case then on screen with the previous case's form.
"""

from __future__ import annotations

import hashlib

import streamlit as st
from medclip_ad.errors import UserInputError

from medclip_viewer.cases import CaseResult
from medclip_viewer.display_text import plain
from medclip_viewer.review_capture import VERDICTS, Bookmark, Review, load_review, new_review, save_review
from medclip_viewer.viewer_actions import ActionMark, moved_since, received_mark

KEY_READER = "review.reader"
KEY_VERDICT_PREFIX = "review.verdict."
KEY_NOTE_PREFIX = "review.note."
KEY_BOOKMARKS_PREFIX = "review.bookmarks."
KEY_BOOKMARK_PREFIX = "review.bookmark."
KEY_SAVE_PREFIX = "review.save."
KEY_MESSAGE_PREFIX = "review.message."
# Not a widget: why the last Save recorded nothing, shown by the next form drawn, whichever case it is for.
KEY_REFUSED = "review.refused"


def _case_id(result: CaseResult) -> str:
    return hashlib.sha256(str(result.folder.resolve()).encode("utf-8")).hexdigest()[:12]


def verdict_keys(result: CaseResult) -> dict[str, str]:
    """The widget keys of one case's review form (for tests and for the page)."""
    case_id = _case_id(result)
    return {name: f"{prefix}{case_id}" for name, prefix in (("verdict", KEY_VERDICT_PREFIX), ("note", KEY_NOTE_PREFIX),
                                                            ("bookmarks", KEY_BOOKMARKS_PREFIX),
                                                            ("bookmark", KEY_BOOKMARK_PREFIX),
                                                            ("save", KEY_SAVE_PREFIX),
                                                            ("message", KEY_MESSAGE_PREFIX))}


def login_name() -> str | None:
    """The signed-in user's name or e-mail when Streamlit authentication is configured."""
    try:
        if st.user.is_logged_in:
            return str(st.user.get("name") or st.user.get("email") or "") or None
    except (AttributeError, KeyError, st.errors.StreamlitAPIException):
        return None
    return None


def verdict_panel(result: CaseResult, title: str, plane: str | None, index: int) -> None:
    """The review form of the open result (`title`: the case's name on the page), prefilled with its saved
    review."""
    keys = verdict_keys(result)
    try:
        saved = load_review(result.folder)
    except UserInputError as error:
        st.warning(str(error))
        saved = None
    _prefill(keys, saved)
    st.subheader(f"Your read of {plain(title)}")
    refused = st.session_state.pop(KEY_REFUSED, None)
    if refused is not None:
        st.error(refused)
    if saved is not None:
        st.text(f"Saved: {saved.verdict} by {saved.reader}, {saved.reviewed_at}")
    if login_name() is None:
        st.text_input("Reader", key=KEY_READER, placeholder="your name")
    st.radio("Model finding", VERDICTS, key=keys["verdict"], horizontal=True,
             help="Do you agree with the model's score and heatmap for this case?")
    if plane is not None:
        here = Bookmark(plane, index).label()
        st.button(f"Bookmark {here}", key=keys["bookmark"], on_click=_bookmark, args=(keys["bookmarks"], here),
                  width="stretch")
        st.multiselect("Bookmarked slices", st.session_state[keys["bookmarks"]], key=keys["bookmarks"])
    st.text_area("Note (optional)", key=keys["note"], height=68)
    st.button("Save review", key=keys["save"], type="primary", width="stretch", on_click=_save,
              args=(result, keys, title, received_mark()))
    message = st.session_state.pop(keys["message"], None)
    if message is not None:
        (st.success if message[0] else st.error)(message[1])


def _prefill(keys: dict[str, str], saved: Review | None) -> None:
    """A case's form starts from its saved review, once per session (then it keeps what the reader typed)."""
    if keys["verdict"] not in st.session_state:
        st.session_state[keys["verdict"]] = saved.verdict if saved else None
        st.session_state[keys["note"]] = saved.note if saved else ""
        st.session_state[keys["bookmarks"]] = [b.label() for b in saved.bookmarks] if saved else []


def add_bookmark(result: CaseResult, label: str) -> None:
    """Bookmark a slice of `result`'s case (from the viewer's B key); saved with the next review."""
    keys = verdict_keys(result)
    try:
        _prefill(keys, load_review(result.folder))
    except UserInputError:  # the form reports it when drawn
        _prefill(keys, None)
    _bookmark(keys["bookmarks"], label)


def _bookmark(key: str, label: str) -> None:
    marks = list(st.session_state.get(key) or [])
    if label not in marks:
        st.session_state[key] = [*marks, label]


def _save(result: CaseResult, keys: dict[str, str], title: str, drawn: ActionMark) -> None:
    """Runs before the page is redrawn, so the worklist shows the new review at once. `drawn`: how far the
    viewer's actions had reached the page when this form was drawn."""
    if moved_since(drawn):
        st.session_state[KEY_REFUSED] = (f"Review of {plain(title)} not saved: the viewer had already moved to "
                                         "another case. Open that case again to save its review.")
        return
    verdict = st.session_state.get(keys["verdict"])
    if verdict is None:
        st.session_state[keys["message"]] = (False, "Choose agree, disagree or uncertain before saving.")
        return
    bookmarks = tuple(Bookmark(*_parse_label(label)) for label in st.session_state.get(keys["bookmarks"]) or [])
    try:
        reader = login_name() or st.session_state.get(KEY_READER) or ""
        review = new_review(result.document, verdict, reader, st.session_state.get(keys["note"]) or "", bookmarks)
        save_review(result.folder, review)
    except (UserInputError, OSError) as error:
        st.session_state[keys["message"]] = (False, f"Review not saved: {error}")
        return
    st.session_state[keys["message"]] = (True, f"Review saved ({review.verdict}, {review.reviewed_at}).")


def _parse_label(label: str) -> tuple[str, int]:
    plane, _, number = label.rpartition(" ")
    return plane, int(number)
