"""The viewer's worklist and review capture: reading a results folder as a list of cases in reading order,
moving through it, and recording what the reader concluded in review.json (never in scores.json).

The AppTest half drives app/viewer.py through its widgets on three copies of one tiny-model case with
different scores; the pure half checks the review file and the worklist rules on their own.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import run_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.orientation import plane_layout
from medclip_ad.io.readers import read_case
from medclip_ad.io.synthetic import make_synthetic_study
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(APP_DIR))  # the viewer's modules import by name, as Streamlit runs them

import streamlit as st  # noqa: E402
from medclip_viewer import reading_view  # noqa: E402
from medclip_viewer.case_cache import read_ahead, read_ahead_settled  # noqa: E402
from medclip_viewer.cases import ResultFolder, item_key, load_result  # noqa: E402
from medclip_viewer.confinement import Scope  # noqa: E402
from medclip_viewer.launch import CASE_ENV, DATA_ROOT_ENV  # noqa: E402
from medclip_viewer.niivue_viewer import display_urls, served_folder  # noqa: E402
from medclip_viewer.viewer_actions import ViewerAction, received  # noqa: E402
from widget_values import run_with_component_value  # noqa: E402
from medclip_viewer.opening_view import neighbour_offer, viewer_case_id  # noqa: E402
from medclip_viewer.review_capture import (  # noqa: E402
    REVIEW_FILE,
    Bookmark,
    load_review,
    new_review,
    reviews_csv,
    save_review,
)
from medclip_viewer.state import KEY_SHOW_PATIENT  # noqa: E402
from medclip_viewer.verdict_panel import KEY_READER, verdict_keys  # noqa: E402
from medclip_viewer.worklist import listed_folders, neighbour, ordered, read_row  # noqa: E402
from medclip_viewer.worklist_panel import (  # noqa: E402
    KEY_WORKLIST_CURRENT,
    KEY_WORKLIST_NEXT,
    KEY_WORKLIST_ORDER,
    KEY_WORKLIST_POPOVER,
    KEY_WORKLIST_PREVIOUS,
)

VIEWER = APP_DIR / "viewer.py"
APP_TIMEOUT_S = 180
# Case names and scores of the three copies; reading order by score is b, c, a.
SCORES = {"case_a": 0.25, "case_b": 0.75, "case_c": 0.5}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder of three cases: one tiny-model `infer` case copied under three names and scores."""
    root = tmp_path_factory.mktemp("worklist")
    study = make_synthetic_study(root / "study")
    sources, _ = discover_cases([study.dicom_dir])
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224,
                                                device="cpu"))
    document = run_case(predictor, read_case(sources[0]), root / "made")
    folder = root / "results"
    for name, score in SCORES.items():
        shutil.copytree(root / "made" / document["case"], folder / name)
        scores = json.loads((folder / name / "scores.json").read_text())
        scores.update(score=score, case=name)
        (folder / name / "scores.json").write_text(json.dumps(scores))
    return folder


@pytest.fixture()
def fresh(results, tmp_path) -> Path:
    """A private copy of the results folder, so reviews written by one test do not leak into another."""
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    return copy


@pytest.fixture()
def viewer(monkeypatch, results, fresh):
    monkeypatch.setenv(DATA_ROOT_ENV, str(results.parent))  # where the cases' scan lies: the viewer reads only there
    monkeypatch.setenv(CASE_ENV, str(fresh))
    at = AppTest.from_file(str(VIEWER), default_timeout=APP_TIMEOUT_S)
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def worklist(at: AppTest):
    """The worklist table, in its pop-over (opened as a click on it does: the table is built only while open)."""
    if not at.session_state[KEY_WORKLIST_POPOVER]:
        at.session_state[KEY_WORKLIST_POPOVER] = True
        ok(at.run())
    return at.dataframe[0].value


def position(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Worklist**"))


def open_case(at: AppTest) -> str:
    return Path(at.session_state[KEY_WORKLIST_CURRENT]).name


# --- the worklist on the page -----------------------------------------------------------------------


def test_worklist_lists_every_case_by_score_and_opens_the_first(viewer):
    assert not viewer.dataframe  # the table is built only once its pop-over opens (it would delay the image)
    table = worklist(viewer)
    assert list(table["case"]) == ["case 2", "case 3", "case 1"]  # identifiers hidden: by place in the folder
    assert list(table["score"]) == [0.75, 0.5, 0.25]
    assert list(table["review"]) == ["not reviewed"] * 3
    assert list(table[""]) == ["▶", "", ""]
    assert open_case(viewer) == "case_b"
    assert not [e.value for e in viewer.error if "Cannot open" in e.value]
    assert any(m.label == "Case score" and m.value == "0.7500" for m in viewer.metric)
    assert "case 1 of 3, 0 reviewed" in position(viewer)


def test_next_and_previous_move_through_the_reading_order(viewer):
    at = ok(viewer.button(key=KEY_WORKLIST_NEXT).click().run())
    assert open_case(at) == "case_c"
    assert list(worklist(at)[""]) == ["", "▶", ""]
    at = ok(at.button(key=KEY_WORKLIST_NEXT).click().run())
    assert open_case(at) == "case_a"
    at = ok(at.button(key=KEY_WORKLIST_NEXT).click().run())  # wraps round
    assert open_case(at) == "case_b"
    at = ok(at.button(key=KEY_WORKLIST_PREVIOUS).click().run())
    assert open_case(at) == "case_a"


def test_the_viewer_is_told_exactly_how_the_next_and_previous_cases_open(monkeypatch, viewer):
    """The neighbours' opening views (read ahead) are what the page sends when the reader moves to them, so
    the viewer's prepared switch is never followed by a reload or a layer refresh."""
    sent: list[dict] = []
    view = reading_view.niivue_view
    monkeypatch.setattr(reading_view, "niivue_view", lambda **options: (sent.append(options), view(**options)))
    read_ahead_settled()
    at = ok(viewer.run())
    neighbours = sent[-1]["neighbours"]
    assert set(neighbours) == {"next", "previous"} and all(neighbours.values())
    assert neighbours["next"]["case_id"] != neighbours["previous"]["case_id"] != sent[-1]["case_id"]
    for button, name in ((KEY_WORKLIST_NEXT, "next"), (KEY_WORKLIST_PREVIOUS, "previous"),
                         (KEY_WORKLIST_PREVIOUS, "previous")):
        expected = sent[-1]["neighbours"][name]
        at = ok(at.button(key=button).click().run())
        shown = sent[-1]
        low, high = shown["mapping"].bounds
        assert expected == dict(case_id=shown["case_id"], **display_urls(shown["scan"], shown["anomaly_map"]),
                                window=[low, high], map_max=shown["map_max"], threshold=shown["style"].threshold,
                                plane=shown["plane"], focus={"mm": shown["focus_mm"], "nonce": shown["focus_id"]},
                                random_weights=shown["random_weights"], image=shown["image"]), name
        read_ahead_settled()
        at = ok(at.run())
    assert open_case(at) == "case_a"


def test_a_viewer_move_opens_the_case_it_names(monkeypatch, viewer):
    """N in the viewer names the case it switched to; the page opens that one (not merely the next row)."""
    names = {viewer_case_id(item_key(ResultFolder(Path(viewer.session_state[KEY_WORKLIST_CURRENT]).parent / name))):
             name for name in SCORES}
    monkeypatch.setattr(st, "session_state", viewer.session_state)
    target = next(case_id for case_id, name in names.items() if name == "case_a")
    reading_view._act(viewer.session_state["viewer.session"], ViewerAction("next", case_id=target))
    assert open_case(viewer) == "case_a"
    reading_view._act(viewer.session_state["viewer.session"], ViewerAction("next", case_id="unknown"))
    assert open_case(viewer) == "case_b"  # an id it does not know: one step on, wrapping round


def viewer_id(at: AppTest) -> str:
    """The NiiVue component's element id (what its value is sent under)."""
    [component] = at.get("component_instance")
    return component.proto.id


def case_id(folder: Path) -> str:
    return viewer_case_id(item_key(ResultFolder(folder.resolve())))


def axial_mm(at: AppTest, index: int) -> list[float]:
    """World position of a voxel in axial slice `index` of the open scan (the three cases share its grid)."""
    scan = at.session_state["viewer.session"].scan
    voxel = [0.0, 0.0, 0.0, 1.0]
    voxel[plane_layout("axial", scan.affine).slice_axis] = index
    return [float(v) for v in (np.asarray(scan.affine) @ np.array(voxel))[:3]]


def test_every_viewer_action_counts_once_in_order_and_a_bookmark_lands_on_its_case(viewer, fresh):
    """N then B pressed before the page reran: both reach the page, the bookmark on the case it was made on."""
    at, component = viewer, viewer_id(viewer)
    keys = {name: verdict_keys(load_result(fresh / name)) for name in SCORES}
    on_c = {"action": "bookmark", "count": 2, "plane": "axial", "mm": axial_mm(at, 5),
            "case": case_id(fresh / "case_c")}
    actions = [{"action": "next", "count": 1, "case": case_id(fresh / "case_c")}, on_c]
    at = ok(run_with_component_value(at, component, {"epoch": "load-1", "actions": actions}))
    assert open_case(at) == "case_c" and at.session_state[keys["case_c"]["bookmarks"]] == ["axial 5"]
    assert at.multiselect(key=keys["case_c"]["bookmarks"]).value == ["axial 5"]
    at = ok(run_with_component_value(at, component, {"epoch": "load-1", "actions": actions}))  # sent again
    assert open_case(at) == "case_c" and at.session_state[keys["case_c"]["bookmarks"]] == ["axial 5"]

    # a bookmark still made on case b (the viewer had not switched yet) waits for case b, then P goes back
    on_b = {"action": "bookmark", "count": 3, "plane": "axial", "mm": axial_mm(at, 6),
            "case": case_id(fresh / "case_b")}
    actions = [*actions, on_b]
    at = ok(run_with_component_value(at, component, {"epoch": "load-1", "actions": actions}))
    assert open_case(at) == "case_c" and at.session_state[keys["case_c"]["bookmarks"]] == ["axial 5"]
    actions = [*actions, {"action": "previous", "count": 4, "case": case_id(fresh / "case_b")}]
    at = ok(run_with_component_value(at, component, {"epoch": "load-1", "actions": actions}))
    assert open_case(at) == "case_b" and at.session_state[keys["case_b"]["bookmarks"]] == ["axial 6"]

    # a reloaded viewer numbers its actions from 1 again: they are new
    at = ok(run_with_component_value(at, component, {"epoch": "load-2", "actions": [{"action": "next", "count": 1}]}))
    assert open_case(at) == "case_c"


def test_a_review_saved_after_the_viewer_moved_on_is_not_recorded(viewer, fresh):
    """Save pressed on case b's form in the moment after N showed case c: nothing is written, the page says
    so, and the form then names case c and records it."""
    at, component = viewer, viewer_id(viewer)
    keys_b, keys_c = (verdict_keys(load_result(fresh / name)) for name in ("case_b", "case_c"))
    assert "Your read of case 2" in [header.value for header in at.subheader]
    at.text_input(key=KEY_READER).set_value("Dr Reader")
    at = ok(at.radio(key=keys_b["verdict"]).set_value("agree").run())
    moved = {"epoch": "load-1", "actions": [{"action": "next", "count": 1, "case": case_id(fresh / "case_c")}]}
    at.button(key=keys_b["save"]).click()
    at = ok(run_with_component_value(at, component, moved))
    assert not (fresh / "case_b" / REVIEW_FILE).exists() and open_case(at) == "case_c"
    assert any("Review of case 2 not saved" in error.value for error in at.error)
    assert "Your read of case 3" in [header.value for header in at.subheader]
    at.radio(key=keys_c["verdict"]).set_value("disagree")
    at.button(key=keys_c["save"]).click()
    at = ok(run_with_component_value(at, component, moved))  # the browser sends the viewer's value again
    assert json.loads((fresh / "case_c" / REVIEW_FILE).read_text())["verdict"] == "disagree"
    assert not (fresh / "case_b" / REVIEW_FILE).exists()


def test_viewer_values_are_read_defensively():
    assert received(None) == (None, []) and received({"action": "next", "count": 1}) == (None, [])
    epoch, actions = received({"epoch": "e", "actions": [
        {"action": "bookmark", "count": 2, "plane": "axial", "mm": [1, 2.5, True], "case": "c"},
        {"action": "next", "count": 1}, {"action": "rm -rf", "count": 3}, {"action": "next", "count": "4"},
        {"action": "previous", "count": True}, "next"]})
    assert epoch == "e" and actions == [ViewerAction("next", count=1),
                                        ViewerAction("bookmark", "axial", None, "c", 2)]


def test_a_neighbour_still_being_read_is_promised_as_a_file(fresh, results):
    """A neighbour not read ahead yet is offered as a file the viewer polls; reading it ahead writes its
    opening view there (the same the page would send), so no script rerun is needed to hand it over."""
    folder, scope = fresh / "case_c", Scope.of(fresh, results.parent)
    offer = neighbour_offer(folder, scope)
    assert set(offer) == {"pending"} and offer == neighbour_offer(folder, scope)  # one promise per case
    promised = served_folder() / offer["pending"]
    assert not promised.exists()
    read_ahead(folder, scope)
    read_ahead_settled()
    view = json.loads(promised.read_text())
    assert view == neighbour_offer(folder, scope)
    assert view["case_id"] == viewer_case_id(item_key(ResultFolder(folder)))
    assert neighbour_offer(fresh / "missing", scope) is None


def test_reading_order_by_name_keeps_the_open_case(viewer):
    worklist(viewer)  # the order is chosen in the table's pop-over
    at = ok(viewer.selectbox(key=KEY_WORKLIST_ORDER).set_value("case name").run())
    assert list(worklist(at)["case"]) == ["case 1", "case 2", "case 3"]
    at.session_state[KEY_WORKLIST_POPOVER] = False  # closed, the order's select box is not drawn: the order stays
    at = ok(at.run())
    assert not at.dataframe
    assert list(worklist(at)["case"]) == ["case 1", "case 2", "case 3"]
    at = ok(at.toggle(key=KEY_SHOW_PATIENT).set_value(True).run())
    assert list(worklist(at)["case"]) == ["case_a", "case_b", "case_c"]
    assert open_case(at) == "case_b"
    at = ok(at.button(key=KEY_WORKLIST_NEXT).click().run())
    assert open_case(at) == "case_c"


def test_a_review_is_saved_beside_scores_and_shown_in_the_worklist(viewer, fresh):
    scores_before = (fresh / "case_b" / "scores.json").read_bytes()
    keys = verdict_keys(load_result(fresh / "case_b"))
    at = viewer
    at.text_input(key=KEY_READER).set_value("Dr Reader")
    at.radio(key=keys["verdict"]).set_value("disagree")
    at.text_area(key=keys["note"]).set_value("=HYPERLINK(\"x\") motion artefact")
    at = ok(at.button(key=keys["bookmark"]).click().run())
    at = ok(at.button(key=keys["save"]).click().run())
    assert any("Review saved (disagree" in s.value for s in at.success)

    review = json.loads((fresh / "case_b" / REVIEW_FILE).read_text())
    assert review["verdict"] == "disagree" and review["reader"] == "Dr Reader"
    assert review["note"].startswith("=HYPERLINK") and review["score"] == 0.75
    assert review["model"]["random_weights"] is True and review["model"]["method"] == "ensemble"
    assert len(review["bookmarks"]) == 1 and review["bookmarks"][0]["plane"] == "axial"
    assert review["reviewed_at"].endswith("+00:00")
    assert (fresh / "case_b" / "scores.json").read_bytes() == scores_before
    assert list(worklist(at)["review"]) == ["disagree", "not reviewed", "not reviewed"]
    assert "case 1 of 3, 1 reviewed" in position(at)

    # the form comes back filled when the case is opened again
    at = ok(at.button(key=KEY_WORKLIST_NEXT).click().run())
    at = ok(at.button(key=KEY_WORKLIST_PREVIOUS).click().run())
    assert at.radio(key=keys["verdict"]).value == "disagree"


def test_saving_without_a_verdict_or_reader_writes_nothing(viewer, fresh):
    keys = verdict_keys(load_result(fresh / "case_b"))
    at = ok(viewer.button(key=keys["save"]).click().run())
    assert any("Choose agree" in e.value for e in at.error)
    at.radio(key=keys["verdict"]).set_value("agree")
    at = ok(at.button(key=keys["save"]).click().run())
    assert any("reader's name" in e.value for e in at.error)
    assert not (fresh / "case_b" / REVIEW_FILE).exists()


# --- review files and worklist rules ----------------------------------------------------------------


SCORES_DOC = {"case": "c1", "score": 0.5, "model": {"method": "anomalyclip", "prompts_sha256": "ab" * 32,
                                                    "random_weights": False, "secret": "not copied"}}


def test_review_round_trip_and_provenance(tmp_path):
    review = new_review(SCORES_DOC, "agree", "  Dr A  ", "fine", (Bookmark("axial", 3), Bookmark("axial", 3)))
    save_review(tmp_path, review)
    loaded = load_review(tmp_path)
    assert loaded == review
    assert loaded.reader == "Dr A" and loaded.bookmarks == (Bookmark("axial", 3),)
    assert loaded.model == {"method": "anomalyclip", "prompts_sha256": "ab" * 32, "random_weights": False}
    assert [p.name for p in tmp_path.iterdir()] == [REVIEW_FILE]  # no temporary file left behind


@pytest.mark.parametrize("verdict, reader, note, message", [
    ("maybe", "Dr A", "", "verdict must be one of"),
    ("agree", "   ", "", "reader's name"),
    ("agree", "Dr A", "x" * 5000, "limited to"),
])
def test_bad_reviews_are_refused(verdict, reader, note, message):
    with pytest.raises(UserInputError, match=message):
        new_review(SCORES_DOC, verdict, reader, note)


def test_unreadable_review_is_reported_not_guessed(tmp_path):
    (tmp_path / REVIEW_FILE).write_text("{not json")
    with pytest.raises(UserInputError, match="unreadable review"):
        load_review(tmp_path)
    (tmp_path / REVIEW_FILE).write_text(json.dumps({"format": "other", "verdict": "agree"}))
    with pytest.raises(UserInputError, match="unreadable review"):
        load_review(tmp_path)


def test_reviews_csv_defuses_formulas_and_reports_bad_files(tmp_path):
    good, bad, none = tmp_path / "good", tmp_path / "bad", tmp_path / "none"
    for folder in (good, bad, none):
        folder.mkdir()
    save_review(good, new_review({**SCORES_DOC, "case": "=cmd()"}, "uncertain", "@reader", "+1 note",
                                 (Bookmark("coronal", 7),)))
    (bad / REVIEW_FILE).write_text("[]")
    text, problems = reviews_csv([good, bad, none])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1
    assert rows[0]["case"] == "'=cmd()" and rows[0]["reader"] == "'@reader" and rows[0]["note"] == "'+1 note"
    assert rows[0]["verdict"] == "uncertain" and rows[0]["bookmarks"] == "coronal:7"
    assert len(problems) == 1 and problems[0].startswith("bad/review.json: unreadable review")


def test_worklist_rows_orders_and_results_table(tmp_path, results):
    shutil.copytree(results, tmp_path / "run")
    run = tmp_path / "run"
    (run / "nested").mkdir()
    shutil.move(run / "case_c", run / "nested" / "case_c")
    outside = tmp_path / "outside"
    shutil.copytree(run / "case_a", outside)
    (run / "results.csv").write_text("case,input,score,percentile,flagged,components,path\n"
                                     f"c,x,0.5,,,,{run / 'nested' / 'case_c'}\n"
                                     f"o,x,0.9,,,,{outside}\n"
                                     "r,x,0.1,,,,../outside\n")
    assert listed_folders(run) == [(run / "nested" / "case_c").resolve()]

    scores = json.loads((run / "case_a" / "scores.json").read_text())
    scores.update(flagged=True, percentile=97.5, components=[{"label": 1}, {"label": 2}])
    (run / "case_a" / "scores.json").write_text(json.dumps(scores))
    (run / "case_b" / "scores.json").write_text("{")
    rows = [read_row(run / "case_a"), read_row(run / "case_b"), read_row(run / "nested" / "case_c")]
    assert (rows[0].flagged, rows[0].percentile, rows[0].findings) == (True, 97.5, 2)
    assert rows[1].score is None and "unreadable scores.json" in rows[1].problem
    assert rows[2].flagged is None and rows[2].findings is None
    assert [r.case for r in ordered(rows, "score")] == ["case_c", "case_a", "case_b"]
    save_review(run / "nested" / "case_c", new_review(SCORES_DOC, "agree", "Dr A"))
    rows[2] = read_row(run / "nested" / "case_c")
    assert [r.case for r in ordered(rows, "unreviewed")] == ["case_a", "case_b", "case_c"]
    assert neighbour(rows, None, 1) == rows[0].folder
    assert neighbour(rows, rows[2].folder, 1) == rows[0].folder
