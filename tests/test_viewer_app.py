"""The Streamlit viewer driven through its widgets (AppTest), and its pure parts checked on their own.

AppTest runs app/viewer.py in-process. The images it displays are recorded from Streamlit's media
store, so the tests check the pixels a browser would receive: PNG, the expected display size for the
voxel spacing, radiological orientation, and the colour scale.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import run_case
from medclip_ad.inference.overlay import OverlayStyle
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.intensity import CT_WINDOW_PRESETS
from medclip_ad.io.orientation import ScreenLabels, extract_slice, plane_layout, screen_labels
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan
from medclip_ad.io.synthetic import DEMO_PATIENT_ID, DEMO_PATIENT_NAME, make_synthetic_study
from medclip_ad.methods.checkpoint import save_method_checkpoint
from medclip_ad.methods.rwda.head import RandomWordHead
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

APP_DIR = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(APP_DIR))  # the viewer's modules import by name, as Streamlit runs them

from medclip_viewer.browse import list_entries, resolve_under_root  # noqa: E402
from medclip_viewer.display_text import unescape  # noqa: E402
from medclip_viewer.intensity import default_mode, percentile_mapping, window_mapping  # noqa: E402
from medclip_viewer.launch import CASE_ENV, DATA_ROOT_ENV, parse_launch_options  # noqa: E402
from medclip_viewer.model import METHOD_AUTO, detector_config  # noqa: E402
from medclip_viewer.niivue_viewer import display_scan_bytes, image_volume  # noqa: E402
from medclip_viewer.open_panel import SOURCE_BROWSE  # noqa: E402
from medclip_viewer.rendering import (  # noqa: E402
    RANDOM_WEIGHTS_RED,
    PanelMarks,
    annotate,
    compose_panels,
    display_shape,
    png_bytes,
    scale_bar_mm,
    slice_position_mm,
)
from medclip_viewer.state import (  # noqa: E402
    JUMP_KEY_PREFIX,
    KEY_AGGREGATION,
    KEY_BROWSE,
    KEY_BROWSE_OPEN,
    KEY_CLIP_WEIGHTS,
    KEY_DOWNLOAD_OVERLAY,
    KEY_IMAGE_SIZE,
    KEY_INTENSITY_MODE,
    KEY_LAYERS,
    KEY_METHOD,
    KEY_MODEL_SECTION,
    KEY_PLANE,
    KEY_RUN,
    KEY_SCORED_PLANE,
    KEY_SECTION,
    KEY_SHOW_PATIENT,
    KEY_SOURCE,
    KEY_THRESHOLD,
    KEY_UPLOAD,
    KEY_VOLUME_INDEX,
    KEY_WINDOW_LEVEL,
    KEY_WINDOW_PRESET,
    KEY_WINDOW_WIDTH,
    SLICE_KEY_PREFIX,
    slice_key,
)
from medclip_viewer.score_plot import SELECTION  # noqa: E402
from medclip_viewer.uploads import save_upload  # noqa: E402
from widget_values import run_with_chart_selection  # noqa: E402

VIEWER = APP_DIR / "viewer.py"
TOP_SLICES_TAB, SCORES_TAB, IMAGES_TAB = "Top slices", "Slice scores", "Slice images (PNG) and export"
PROVENANCE_TAB = "Model provenance"
FAST_CONFIG = DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224, device="cpu")
APP_TIMEOUT_S = 180
LESION_SLICE = 16
# The random-weights mark of a 512 px panel lies within its top rows.
MARK_ROWS = 48


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A synthetic CT study (DICOM series + NIfTI) and an `infer` output for its DICOM series."""
    root = tmp_path_factory.mktemp("viewer")
    study = make_synthetic_study(root / "data" / "study")
    predictor = AnomalyPredictor(FAST_CONFIG)
    sources, _ = discover_cases([study.dicom_dir])
    scan = read_case(sources[0])
    document = run_case(predictor, scan, root / "results")
    return {"study": study, "scan": scan, "case": root / "results" / document["case"], "document": document,
            "data_root": root / "data"}


class RecordingMediaStorage(MemoryMediaFileStorage):
    """Streamlit's in-memory media store, keeping every file so tests can decode what was displayed."""

    files: dict[str, tuple[bytes, str]] = {}

    def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
        file_id = super().load_and_get_id(path_or_data, mimetype, kind, filename)
        RecordingMediaStorage.files[file_id] = (self.get_file(file_id).content, mimetype)
        return file_id


@pytest.fixture()
def viewer(monkeypatch):
    """An AppTest of the viewer with a clean environment; set MEDCLIP_AD_* before calling `.run()`."""
    monkeypatch.delenv(CASE_ENV, raising=False)
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.setattr("streamlit.testing.v1.app_test.MemoryMediaFileStorage", RecordingMediaStorage)
    return AppTest.from_file(str(VIEWER), default_timeout=APP_TIMEOUT_S)


def opened_case(viewer: AppTest, monkeypatch, case: Path, data_root: Path | None = None,
                tab: str | None = IMAGES_TAB) -> AppTest:
    """The viewer started on a results folder, with the data root its scans lie under (the case's grandparent's
    parent by default, which holds the generated study), and the tab below the viewer that most tests read
    (the PNG panels' and the slice slider's) open; `tab=None` leaves the page's own first tab open."""
    monkeypatch.setenv(CASE_ENV, str(case))
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root or case.parents[1]))
    if tab is not None:
        viewer.session_state[KEY_SECTION] = tab
    return ok(viewer.run())


def model_section(at: AppTest, open_: bool = True) -> AppTest:
    """Open (or close) the sidebar's Model section, as a click on its header does, and rerun."""
    at.session_state[KEY_MODEL_SECTION] = open_
    return ok(at.run())


def tables_with(at: AppTest, column: str) -> list:
    """The tables on the page with this column."""
    return [frame.value for frame in at.dataframe if column in frame.value.columns]


def open_tab(at: AppTest, label: str) -> AppTest:
    """Select a tab below the viewer (as a click on it does) and rerun."""
    at.session_state[KEY_SECTION] = label
    return ok(at.run())


def slice_sliders(at: AppTest) -> list:
    return [slider for slider in at.slider if str(slider.key).startswith(SLICE_KEY_PREFIX)]


def jump_buttons(at: AppTest) -> list:
    return [button for button in at.button if str(button.key).startswith(JUMP_KEY_PREFIX)]


def viewer_focus(at: AppTest) -> str:
    """Where the viewer is told to put its crosshair: the focus nonce (case, plane and slice)."""
    [viewer] = at.get("component_instance")
    return json.loads(viewer.proto.json_args)["focus"]["nonce"]


def table_with(at: AppTest, column: str):
    """The table on the page with this column (the patient table has `field`, the provenance one `setting`)."""
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)


def ok(at: AppTest) -> AppTest:
    """The run raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def panel(at: AppTest, name: str) -> tuple[np.ndarray, str, str]:
    """The displayed 'Scan' or 'Overlay' image: decoded pixels, its caption, and its MIME type (their tab
    opened first when closed)."""
    if not at.image:
        open_tab(at, IMAGES_TAB)
    for element in at.image:
        for url, caption in zip(element.value, element.captions):
            if caption.startswith(f"{name} ·"):
                content, mimetype = RecordingMediaStorage.files[Path(url).stem]
                return np.asarray(Image.open(io.BytesIO(content))), caption, mimetype
    raise AssertionError(f"no {name} panel on the page")


def has_colour(rgb: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((rgb[..., :3] == colour).all(axis=-1).any())


def scored(at: AppTest) -> AppTest:
    """Press Run inference, wait for the background job, and draw the page that opens its result."""
    ok(at.button(key=KEY_RUN).click().run())
    for job in list(at.session_state["viewer.session"].jobs.values()):
        assert job.wait(APP_TIMEOUT_S), "inference did not finish"
    return ok(at.run())


def metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def provenance_row(at: AppTest, setting: str) -> str:
    """A row of the provenance table (its tab opened first when closed)."""
    if not tables_with(at, "setting"):
        open_tab(at, PROVENANCE_TAB)
    table = table_with(at, "setting")
    return table["value"][list(table["setting"]).index(setting)]


def page_text(at: AppTest) -> str:
    """Everything the page shows (all element protos, main area and sidebar), for what-is-not-shown checks."""
    texts: list[str] = []

    def walk(node) -> None:
        children = getattr(node, "children", None)
        if children is not None:
            for child in children.values():
                walk(child)
        elif getattr(node, "proto", None) is not None:
            texts.append(str(node.proto))

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(texts)


# --- the viewer, driven through its widgets ---------------------------------------------------------


def test_results_folder_opens_with_score_banner_and_png_panels(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    document = generated["document"]
    assert metric(at, "Case score") == f"{document['score']:.4f}"
    assert any("RANDOM WEIGHTS" in e.value for e in at.error)
    scan_png, caption, mimetype = panel(at, "Scan")
    overlay_png, _, overlay_mimetype = panel(at, "Overlay")
    assert mimetype == overlay_mimetype == "image/png"
    assert scan_png.shape == overlay_png.shape == (512, 512, 3)  # 128 x 128 at 1.6 x 1.6 mm: square
    top = document["top_slices"][0]
    assert f"axial slice {top} of 31" in caption and "left R, right L, top A, bottom P" in caption
    assert at.slider(key=slice_key("axial")).value == top
    assert "window soft_tissue" in caption  # the model's window (scores.json `intensity`)
    # the interactive view comes first; the top slices, score curve, PNG panels and provenance wait in tabs
    assert [tab.label for tab in at.tabs] == [TOP_SLICES_TAB, SCORES_TAB, IMAGES_TAB, PROVENANCE_TAB]


def test_slice_slider_moves_the_slice_and_its_score(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    before, _, _ = panel(at, "Scan")
    ok(at.slider(key=slice_key("axial")).set_value(LESION_SLICE).run())
    after, caption, _ = panel(at, "Scan")
    assert f"axial slice {LESION_SLICE} of 31" in caption
    assert metric(at, f"Slice {LESION_SLICE} score") == f"{generated['document']['slice_scores'][LESION_SLICE]:.4f}"
    assert not np.array_equal(before, after)


def test_displayed_slice_is_the_scan_in_radiological_orientation(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    ok(at.slider(key=slice_key("axial")).set_value(LESION_SLICE).run())
    shown, _, _ = panel(at, "Scan")
    scan = generated["scan"]
    layout = plane_layout("axial", scan.affine)
    mapping = window_mapping(CT_WINDOW_PRESETS["soft_tissue"].width, CT_WINDOW_PRESETS["soft_tissue"].level)
    expected, _ = compose_panels(mapping(extract_slice(scan.array, layout, LESION_SLICE)), None, OverlayStyle(),
                                 (512, 512))
    # 128 pixels of 1.6 mm drawn on 512: 0.4 mm per display pixel, with the axial plane's letters
    np.testing.assert_array_equal(shown, annotate(expected, PanelMarks(screen_labels("axial"), 0.4)))
    # The lesion lies at 35% of the column axis, which runs towards patient left: it shows left of centre.
    lesion_columns = np.flatnonzero(extract_slice(generated["study"].lesion_mask, layout, LESION_SLICE).any(axis=0))
    assert lesion_columns.mean() < 64


def test_switching_views_keeps_physical_aspect(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    for plane in ("coronal", "sagittal"):
        ok(at.radio(key=KEY_PLANE).set_value(plane).run())
        shown, caption, _ = panel(at, "Scan")
        # 32 slices of 4 mm over 128 pixels of 1.6 mm: 128 mm tall, 204.8 mm wide.
        assert shown.shape == (320, 512, 3), plane
        assert f"{plane} slice 64 of 127" in caption
        assert at.slider(key=slice_key(plane)).value == 64
    assert "left A, right P, top S, bottom I" in caption
    ok(at.radio(key=KEY_PLANE).set_value("axial").run())
    assert panel(at, "Scan")[0].shape == (512, 512, 3)


def test_window_presets_and_free_window_level(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    soft, _, _ = panel(at, "Scan")
    ok(at.selectbox(key=KEY_WINDOW_PRESET).select("bone").run())
    assert at.number_input(key=KEY_WINDOW_WIDTH).value == 2500.0
    assert at.number_input(key=KEY_WINDOW_LEVEL).value == 480.0
    bone, caption, _ = panel(at, "Scan")
    assert "window bone" in caption and not np.array_equal(soft, bone)
    ok(at.number_input(key=KEY_WINDOW_WIDTH).set_value(100.0).run())
    assert at.selectbox(key=KEY_WINDOW_PRESET).value == "custom"
    assert "window 100/480" in panel(at, "Scan")[1]
    ok(at.radio(key=KEY_INTENSITY_MODE).set_value("percentiles").run())
    assert "percentiles 0.5-99.5" in panel(at, "Scan")[1]


def test_custom_window_comes_back_after_presets_and_percentiles(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    ok(at.number_input(key=KEY_WINDOW_WIDTH).set_value(150.0).run())
    ok(at.number_input(key=KEY_WINDOW_LEVEL).set_value(-30.0).run())
    assert at.selectbox(key=KEY_WINDOW_PRESET).value == "custom"
    ok(at.selectbox(key=KEY_WINDOW_PRESET).select("bone").run())
    assert at.number_input(key=KEY_WINDOW_WIDTH).value == 2500.0
    ok(at.selectbox(key=KEY_WINDOW_PRESET).select("custom").run())
    assert (at.number_input(key=KEY_WINDOW_WIDTH).value, at.number_input(key=KEY_WINDOW_LEVEL).value) == (150.0, -30.0)
    ok(at.radio(key=KEY_INTENSITY_MODE).set_value("percentiles").run())
    ok(at.radio(key=KEY_INTENSITY_MODE).set_value("ct_window").run())
    assert at.selectbox(key=KEY_WINDOW_PRESET).value == "custom"
    assert "window 150/-30" in panel(at, "Scan")[1]


def test_method_choices_fit_their_box(viewer, monkeypatch, generated):
    at = model_section(opened_case(viewer, monkeypatch, generated["case"]))
    method = at.selectbox(key=KEY_METHOD)
    assert max(len(label) for label in method.options) <= 12  # the sidebar's box shows about 25 characters
    assert "checkpoint's method" in method.help


def test_model_section_is_built_only_while_open_and_keeps_its_settings(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"], tab=None)
    # a scored case: the section starts closed and none of its controls is built (they delayed the image)
    model_keys = {KEY_METHOD, KEY_CLIP_WEIGHTS, KEY_LAYERS, KEY_RUN, KEY_AGGREGATION}
    assert not model_keys & {element.key for element in [*at.selectbox, *at.text_input, *at.button]}
    # prefilled from the result's provenance while closed
    assert at.session_state[KEY_CLIP_WEIGHTS] == "random:tiny" and at.session_state[KEY_METHOD] == "ensemble"
    model_section(at)
    assert at.selectbox(key=KEY_CLIP_WEIGHTS).value == "random:tiny"
    at.selectbox(key=KEY_METHOD).select("anomalyclip")
    at.text_input(key=KEY_LAYERS).input("3 6")
    at.selectbox(key=KEY_AGGREGATION).select("mean")
    ok(at.run())
    model_section(at, open_=False)
    assert not model_keys & {element.key for element in [*at.selectbox, *at.text_input, *at.button]}
    ok(at.run())  # a second run with the section closed: Streamlit drops a hidden widget's value after one
    model_section(at)
    assert at.selectbox(key=KEY_METHOD).value == "anomalyclip" and at.text_input(key=KEY_LAYERS).value == "3 6"
    assert at.selectbox(key=KEY_AGGREGATION).value == "mean"


def test_model_section_opens_for_a_case_without_result(viewer, monkeypatch, generated):
    monkeypatch.setenv(DATA_ROOT_ENV, str(generated["data_root"]))
    at = ok(viewer.run())
    assert at.selectbox(key=KEY_METHOD)  # nothing open yet: the section is open
    model_section(at, open_=False)
    assert not [box for box in at.selectbox if box.key == KEY_METHOD]
    ok(at.radio(key=KEY_SOURCE).set_value(SOURCE_BROWSE).run())
    at.selectbox(key=KEY_BROWSE).select("study/synthetic_ct.nii.gz")
    ok(at.button(key=KEY_BROWSE_OPEN).click().run())
    assert any("No results" in info.value for info in at.info)
    assert at.button(key=KEY_RUN).label == "Run inference"  # opened by itself for the unscored case


def test_threshold_hides_low_map_values_without_rescaling(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    # uncalibrated: the threshold starts at the map's 90th percentile, so most of the scan starts uncoloured
    anomaly_map = np.asarray(nib.load(generated["case"] / "anomaly_map.nii.gz").dataobj)
    step = generated["document"]["map_range"][1] / 100
    assert at.slider(key=KEY_THRESHOLD).value == pytest.approx(np.percentile(anomaly_map, 90), abs=step)
    scan_png, _, _ = panel(at, "Scan")
    coloured, _, _ = panel(at, "Overlay")
    assert not np.array_equal(scan_png, coloured)
    map_max = generated["document"]["map_range"][1]
    ok(at.slider(key=KEY_THRESHOLD).set_value(map_max).run())
    hidden, _, _ = panel(at, "Overlay")
    # every value is below the map's maximum: all grey, but for the random-weights mark at the top left
    np.testing.assert_array_equal(hidden[MARK_ROWS:], scan_png[MARK_ROWS:])
    assert has_colour(hidden[:MARK_ROWS], RANDOM_WEIGHTS_RED) and not has_colour(scan_png, RANDOM_WEIGHTS_RED)


def test_only_the_open_tab_below_the_viewer_is_built(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"], tab=None)
    # the top slices' tab is open at first (cheap: a row of buttons); the score curve, the PNG panels, the
    # slice slider, the exports and the provenance table are not sent at all
    assert at.session_state[KEY_SECTION] == TOP_SLICES_TAB
    assert len(jump_buttons(at)) == len(generated["document"]["top_slices"])
    assert not at.get("vega_lite_chart") and not at.image and not slice_sliders(at) and not at.download_button
    assert not tables_with(at, "setting")
    assert viewer_focus(at).endswith(f"|axial|{generated['document']['top_slices'][0]}")  # the viewer needs no tab
    at = open_tab(at, SCORES_TAB)
    assert len(at.get("vega_lite_chart")) == 1 and not jump_buttons(at) and not at.image
    at = open_tab(at, IMAGES_TAB)
    assert panel(at, "Overlay") and slice_sliders(at) and at.download_button(key=KEY_DOWNLOAD_OVERLAY)
    assert not at.get("vega_lite_chart") and not jump_buttons(at) and not tables_with(at, "setting")
    at = open_tab(at, PROVENANCE_TAB)
    assert provenance_row(at, "method") == "ensemble"
    assert not at.get("vega_lite_chart") and not jump_buttons(at) and not at.image
    assert metric(at, "Case score") == f"{generated['document']['score']:.4f}"  # beside the viewer, in every tab


def test_the_slice_stays_while_its_slider_is_hidden(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    at = ok(at.slider(key=slice_key("axial")).set_value(7).run())
    assert viewer_focus(at).endswith("|axial|7")
    at = open_tab(at, PROVENANCE_TAB)
    assert not slice_sliders(at) and metric(at, "Slice 7") and viewer_focus(at).endswith("|axial|7")
    at = ok(at.radio(key=KEY_PLANE).set_value("coronal").run())
    at = ok(at.radio(key=KEY_PLANE).set_value("axial").run())
    at = open_tab(at, IMAGES_TAB)
    assert at.slider(key=slice_key("axial")).value == 7 and "axial slice 7 of 31" in panel(at, "Overlay")[1]


def test_jump_buttons_and_a_click_on_the_score_curve_show_their_slice(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"], tab=TOP_SLICES_TAB)
    at = ok(at.radio(key=KEY_PLANE).set_value("coronal").run())
    at = ok(at.button(key=f"{JUMP_KEY_PREFIX}2").click().run())
    third = generated["document"]["top_slices"][2]
    assert at.radio(key=KEY_PLANE).value == "axial" and viewer_focus(at).endswith(f"|axial|{third}")
    assert metric(at, f"Slice {third} score")
    at = open_tab(at, SCORES_TAB)
    clicked = 20 if third != 20 else 21
    [chart] = at.get("vega_lite_chart")
    at = ok(run_with_chart_selection(at, chart.proto.id, {SELECTION: [{"slice": clicked}]}))
    assert viewer_focus(at).endswith(f"|axial|{clicked}") and metric(at, f"Slice {clicked} score")
    assert len(at.get("vega_lite_chart")) == 1  # the tab stays open, its curve drawn
    at = open_tab(at, IMAGES_TAB)
    assert at.slider(key=slice_key("axial")).value == clicked
    assert f"axial slice {clicked} of 31" in panel(at, "Overlay")[1]


def test_overlay_export_is_the_displayed_png(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    download = at.download_button(key=KEY_DOWNLOAD_OVERLAY)
    content, mimetype = RecordingMediaStorage.files[Path(download.proto.url).stem]
    assert mimetype == "image/png"
    exported = np.asarray(Image.open(io.BytesIO(content)))
    np.testing.assert_array_equal(exported, panel(at, "Overlay")[0])
    assert has_colour(exported[:MARK_ROWS, :256], RANDOM_WEIGHTS_RED)  # random weights: marked in the file
    assert any(button.label.startswith("Download map (NIfTI)") for button in at.download_button)


def test_patient_identifiers_only_with_the_toggle(viewer, monkeypatch, generated):
    at = opened_case(viewer, monkeypatch, generated["case"])
    text = page_text(at)
    assert DEMO_PATIENT_NAME not in text and DEMO_PATIENT_ID not in text
    assert at.subheader[0].value == "case 1"  # a neutral label, not the file-derived case name
    ok(at.toggle(key=KEY_SHOW_PATIENT).set_value(True).run())
    table = table_with(at, "field")
    assert {DEMO_PATIENT_NAME, DEMO_PATIENT_ID} <= set(table["value"])
    assert at.subheader[0].value == generated["document"]["case"]


def test_data_root_browsing_and_inference_with_progress(viewer, monkeypatch, generated):
    monkeypatch.setenv(DATA_ROOT_ENV, str(generated["data_root"]))
    at = ok(viewer.run())
    ok(at.radio(key=KEY_SOURCE).set_value(SOURCE_BROWSE).run())
    entries = at.selectbox(key=KEY_BROWSE).options
    assert "study/dicom/ (DICOM, 32 files)" in entries and "study/synthetic_ct.nii.gz" in entries
    assert not any(entry.endswith(".dcm") for entry in entries)  # the series once, not slice by slice
    assert all(not entry.startswith("/") and ".." not in entry for entry in entries)
    at.selectbox(key=KEY_BROWSE).select("study/synthetic_ct.nii.gz")
    ok(at.button(key=KEY_BROWSE_OPEN).click().run())
    assert at.subheader[0].value == "case 1"
    assert any("No results" in info.value for info in at.info)
    assert "percentiles" in panel(at, "Scan")[1]  # NIfTI has no modality: robust percentiles, as the model
    at.selectbox(key=KEY_CLIP_WEIGHTS).select("random:tiny")
    at.number_input(key=KEY_IMAGE_SIZE).set_value(224)
    ok(at.run())
    assert any("RANDOM WEIGHTS" in e.value for e in at.sidebar.error)
    ok(at.button(key=KEY_RUN).click().run())
    [job] = at.session_state["viewer.session"].jobs.values()
    assert job.wait(APP_TIMEOUT_S) and job.state == "done" and job.fraction == 1.0
    ok(at.run())
    assert 0.0 < float(metric(at, "Case score")) < 1.0
    assert panel(at, "Overlay")[0].shape == (512, 512, 3)
    assert ok(at.run()).button(key=KEY_RUN).label == "Show earlier result"  # cached per case and model
    assert provenance_row(at, "scored plane") == "axial" and provenance_row(at, "volume score") == "max"
    at.selectbox(key=KEY_SCORED_PLANE).select("coronal")
    at.selectbox(key=KEY_AGGREGATION).select("mean")
    assert ok(at.run()).button(key=KEY_RUN).label == "Run inference"  # other scoring: not the cached result
    scored(at)
    assert provenance_row(at, "scored plane") == "coronal" and provenance_row(at, "volume score") == "mean"


def test_a_4d_series_opens_one_volume_and_its_result_reopens(viewer, monkeypatch, tmp_path):
    volumes = np.stack([np.full((24, 20, 3), 100.0 * (t + 1), np.float32) for t in range(3)], axis=-1)
    volumes += np.random.default_rng(0).random(volumes.shape, dtype=np.float32)
    root = tmp_path / "root"
    root.mkdir()
    nib.save(nib.Nifti1Image(volumes, np.diag([2.0, 2.0, 3.0, 1.0])), root / "dynamic.nii.gz")
    (tmp_path / "work").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "work"))  # where the session keeps its results
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    at = ok(viewer.run())
    ok(at.radio(key=KEY_SOURCE).set_value(SOURCE_BROWSE).run())
    at.selectbox(key=KEY_BROWSE).select("dynamic.nii.gz")
    ok(at.button(key=KEY_BROWSE_OPEN).click().run())
    assert at.number_input(key=KEY_VOLUME_INDEX).max == 2 and not at.error
    ok(at.number_input(key=KEY_VOLUME_INDEX).set_value(2).run())
    at.selectbox(key=KEY_CLIP_WEIGHTS).select("random:tiny")
    at.number_input(key=KEY_IMAGE_SIZE).set_value(224)
    scored(at)
    [written] = (tmp_path / "work").glob("medclip-ad-viewer-*/results/*/dynamic/scores.json")
    assert json.loads(written.read_text())["volume_index"] == 2
    reopened = opened_case(AppTest.from_file(str(VIEWER), default_timeout=APP_TIMEOUT_S), monkeypatch, written.parent,
                           data_root=root)
    assert reopened.subheader[0].value == "case 1" and not [e for e in reopened.error if "Cannot" in e.value]


def test_uploaded_png_is_scored_with_its_aspect(viewer, tmp_path):
    rng = np.random.default_rng(0)
    image = png_bytes(rng.integers(0, 256, (60, 90), dtype=np.uint8))
    at = ok(viewer.run())
    ok(at.file_uploader(key=KEY_UPLOAD).upload("photo.png", image, "image/png").run())
    assert at.subheader[0].value == "case 1"
    caption = panel(at, "Scan")[1]
    assert "8-bit image, unchanged" in caption
    # a PNG records no pixel size: said so, never "1.00 x 1.00 mm"
    assert "no physical spacing" in caption and " mm" not in caption
    assert "no physical spacing" in page_text(at) and "spacing 1.00 x 1.00 mm" not in page_text(at)
    at.selectbox(key=KEY_CLIP_WEIGHTS).select("random:tiny")
    at.number_input(key=KEY_IMAGE_SIZE).set_value(224)
    scored(at)
    assert 0.0 < float(metric(at, "Case score")) < 1.0
    overlay_png = panel(at, "Overlay")[0]
    assert overlay_png.shape == (341, 512, 3)  # 60 x 90 enlarged to a 512 px long side
    assert has_colour(overlay_png[:MARK_ROWS], RANDOM_WEIGHTS_RED)


def test_zipped_dicom_series_upload_opens_without_identifiers(viewer, generated):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(generated["study"].dicom_dir.iterdir()):
            archive.write(path, f"series/{path.name}")
    at = ok(viewer.run())
    ok(at.file_uploader(key=KEY_UPLOAD).upload("series.zip", buffer.getvalue(), "application/zip").run())
    assert at.subheader[0].value == "case 1"
    assert "volume · CT · 128 x 128 x 32" in page_text(at)
    assert DEMO_PATIENT_NAME not in page_text(at)


def test_unreadable_uploads_get_a_clear_message(viewer):
    at = ok(viewer.run())
    ok(at.file_uploader(key=KEY_UPLOAD).upload("scan.dcm", b"not a dicom file at all").run())
    messages = [unescape(e.value) for e in at.sidebar.error]
    assert any(m.startswith("Cannot read scan.dcm: not a DICOM file") for m in messages), messages
    assert not any("/tmp" in m or "medclip-ad-viewer" in m for m in messages)  # no server paths
    ok(at.file_uploader(key=KEY_UPLOAD).set_value(("series.zip", b"PK broken", "application/zip")).run())
    assert any("series.zip: not a readable zip archive" in unescape(e.value) for e in at.sidebar.error)
    assert any("Open a case" in info.value for info in at.info)


def test_results_folder_whose_input_moved_says_so(viewer, monkeypatch, generated, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    document = dict(generated["document"], input=str(tmp_path / "gone"))
    (moved / "scores.json").write_text(json.dumps(document))
    (moved / "anomaly_map.nii.gz").write_bytes((generated["case"] / "anomaly_map.nii.gz").read_bytes())
    at = opened_case(viewer, monkeypatch, moved, data_root=tmp_path)
    messages = [unescape(e.value) for e in at.sidebar.error]
    assert any("the scanned input gone: not available here" in m for m in messages), messages


# --- pure parts ---------------------------------------------------------------------------------------


def _marker_volume() -> tuple[np.ndarray, np.ndarray]:
    """A volume stored like DICOM read through MONAI (columns towards patient left, rows towards
    posterior, slices towards superior) with one bright voxel at the patient's right, front, top."""
    volume = np.zeros((6, 5, 4), dtype=np.float32)
    volume[0, 0, 3] = 1.0  # column 0 = most right, row 0 = most anterior, slice 3 = most superior
    affine = np.diag([-2.0, -1.0, 3.0, 1.0])
    return volume, affine


def _stored_differently(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy stored RAS-ascending and with axes permuted (as a NIfTI converter might)."""
    flipped = volume[::-1, ::-1, :]
    flipped_affine = affine.copy()
    flipped_affine[:3, 0] *= -1
    flipped_affine[:3, 1] *= -1
    order = (2, 0, 1)
    permuted = np.transpose(flipped, order)
    permuted_affine = np.eye(4)
    permuted_affine[:3, :3] = flipped_affine[:3, :3][:, order]
    return permuted, permuted_affine


@pytest.mark.parametrize("plane, corner", [("axial", (0, 0)), ("coronal", (0, 0)), ("sagittal", (0, 0))])
def test_radiological_orientation_puts_right_anterior_superior_top_left(plane, corner):
    volume, affine = _marker_volume()
    for stored, stored_affine in ((volume, affine), _stored_differently(volume, affine)):
        layout = plane_layout(plane, stored_affine)
        marker_index = int(np.argwhere(stored > 0)[0][layout.slice_axis])
        shown = extract_slice(stored, layout, marker_index)
        # axial: right on the left, anterior on top; coronal: right left, superior top; sagittal: anterior
        # left, superior top. The marker is right-anterior-superior, so it is top-left in every plane.
        assert tuple(np.argwhere(shown > 0)[0]) == corner, (plane, stored.shape)


def test_orientation_is_the_same_whatever_the_storage_order():
    volume, affine = _marker_volume()
    volume = np.random.default_rng(0).random(volume.shape).astype(np.float32)
    other, other_affine = _stored_differently(volume, affine)
    for plane in ("axial", "coronal", "sagittal"):
        first, second = plane_layout(plane, affine), plane_layout(plane, other_affine)
        for index in range(volume.shape[first.slice_axis]):
            np.testing.assert_array_equal(extract_slice(volume, first, index),
                                          extract_slice(other, second, _matching_index(first, second, index, volume)))
        assert (first.row_mm, first.col_mm) == (second.row_mm, second.col_mm)


def _matching_index(first, second, index, volume) -> int:
    """Where slice `index` of the first storage lies in the second, whose axes 0 and 1 were reversed."""
    flipped = {0: True, 1: True, 2: False}[first.slice_axis]
    return volume.shape[first.slice_axis] - 1 - index if flipped else index


def test_screen_labels_follow_the_conventions():
    assert screen_labels("axial") == ScreenLabels(left="R", right="L", top="A", bottom="P")
    assert (screen_labels("coronal").left, screen_labels("coronal").top) == ("R", "S")
    assert (screen_labels("sagittal").left, screen_labels("sagittal").right) == ("A", "P")


def test_display_shape_keeps_physical_aspect_within_bounds():
    axial = plane_layout("axial", np.diag([0.8, 0.8, 4.0, 1.0]))
    coronal = plane_layout("coronal", np.diag([0.8, 0.8, 4.0, 1.0]))
    assert display_shape(512, 512, axial) == (512, 512)
    assert display_shape(40, 512, coronal) == (200, 512)  # 160 mm tall, 409.6 mm wide
    assert display_shape(2000, 3000, plane_layout("axial", None)) == (683, 1024)  # large: reduced
    assert display_shape(30, 60, plane_layout("axial", None)) == (256, 512)  # small: enlarged


def test_slice_position_is_world_millimetres():
    study_affine = np.array([[-1.6, 0, 0, 101.6], [0, -1.6, 0, 101.6], [0, 0, 4.0, -62.0], [0, 0, 0, 1]])
    layout = plane_layout("axial", study_affine)
    assert slice_position_mm(study_affine, (128, 128, 32), layout, 0) == pytest.approx(-62.0)
    assert slice_position_mm(study_affine, (128, 128, 32), layout, 31) == pytest.approx(62.0)


def test_window_math_matches_the_presets():
    mapping = window_mapping(400.0, 40.0)
    assert mapping.bounds == (-160.0, 240.0) and mapping.description == "window soft_tissue"
    np.testing.assert_array_equal(mapping(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])), [0, 0, 128, 255, 255])
    assert window_mapping(100.0, 0.0).description == "window 100/0"
    with pytest.raises(UserInputError):
        window_mapping(0.0, 40.0)


def test_percentiles_ignore_non_finite_values():
    values = np.concatenate([np.arange(101, dtype=np.float32), [np.nan, np.inf, -np.inf]])
    assert percentile_mapping(values, (0.0, 100.0)).bounds == (0.0, 100.0)
    assert percentile_mapping(values, (2.0, 98.0)).bounds == (2.0, 98.0)


def test_default_grey_levels_by_modality_and_model():
    volume = np.zeros((4, 4, 4), np.float32)
    ct = Scan("ct", Path("ct"), "volume", volume, np.eye(4), modality="CT")
    mr = Scan("mr", Path("mr"), "volume", volume, np.eye(4), modality="MR")
    photo = Scan("photo", Path("p.png"), "image", np.zeros((4, 4, 3), np.uint8))
    assert default_mode(ct, None) == "ct_window" and default_mode(mr, None) == "percentiles"
    assert default_mode(mr, "window brain") == "ct_window" and default_mode(photo, None) == "as_stored"


def test_colour_scale_is_fixed_not_per_slice():
    grey = np.full((4, 4), 100, np.uint8)
    faint = np.full((4, 4), 0.2, np.float32)
    mixed = faint.copy()
    mixed[0, 0] = 0.9
    style = OverlayStyle(vmax=1.0, opacity=0.5, threshold=0.1)
    _, first = compose_panels(grey, faint, style, (4, 4))
    _, second = compose_panels(grey, mixed, style, (4, 4))
    np.testing.assert_array_equal(first[1:, 1:], second[1:, 1:])  # 0.2 looks the same beside a 0.9
    below = np.full((4, 4), 0.05, np.float32)
    scan_rgb, hidden = compose_panels(grey, below, style, (4, 4))
    np.testing.assert_array_equal(hidden, scan_rgb)


def _bright_box(rgb: np.ndarray) -> tuple[float, float]:
    """Centre (row, column) of the white pixels of a mark."""
    rows, columns = np.nonzero((rgb == 255).all(axis=-1))
    return float(rows.mean()), float(columns.mean())


def test_panel_marks_put_each_letter_at_its_edge():
    black = np.zeros((400, 600, 3), np.uint8)
    marked = annotate(black, PanelMarks(ScreenLabels(left="R", right="L", top="A", bottom="P")))
    edges = {"left": marked[:, :60], "right": marked[:, -60:], "top": marked[:60, 200:400],
             "bottom": marked[-60:, 200:400]}
    row, _ = _bright_box(edges["left"])
    assert abs(row - 200) < 10 and abs(_bright_box(edges["right"])[0] - 200) < 10
    assert abs(_bright_box(edges["top"])[1] - 100) < 10 and abs(_bright_box(edges["bottom"])[1] - 100) < 10
    assert (marked[60:-60, 60:-60] == 0).all()  # nothing but the letters, at the edges
    swapped = annotate(black, PanelMarks(ScreenLabels(left="L", right="R", top="A", bottom="P")))
    assert not np.array_equal(swapped[:, :60], marked[:, :60])  # the letter drawn is the label given
    assert not has_colour(marked, RANDOM_WEIGHTS_RED)


def test_panel_marks_scale_bar_and_random_weights():
    black = np.zeros((512, 512, 3), np.uint8)
    assert scale_bar_mm(512, 0.4) == 20 and scale_bar_mm(512, 0.1) == 10 and scale_bar_mm(10, 0.1) is None
    marked = annotate(black, PanelMarks(mm_per_pixel=0.4, random_weights=True))
    bar_row = (marked[-20:, 256:] == 255).all(axis=-1)
    assert bar_row.sum(axis=1).max() == 50  # 20 mm at 0.4 mm per pixel
    assert has_colour(marked[:MARK_ROWS, :256], RANDOM_WEIGHTS_RED)
    assert not (annotate(black, PanelMarks()) != 0).any()  # no spacing, no orientation, real weights: no marks


def test_a_colour_image_goes_to_niivue_as_stored_rgb():
    """A 2-D picture is one slice for NiiVue's neurological axial view: x along the columns, y up the rows
    (so row 0 is at the top), its colours in an RGB24 NIfTI."""
    picture = np.zeros((4, 6, 3), np.uint8)
    picture[0, 5] = (250, 10, 20)  # top right
    shown = nib.Nifti1Image.from_bytes(
        display_scan_bytes(Scan("photo", Path("p.png"), "image", picture, spacing=(1.0, 1.0))))
    data = np.asarray(shown.dataobj)
    assert data.shape == (6, 4, 1) and shown.get_data_dtype().names == ("R", "G", "B")
    assert tuple(data[5, 3, 0]) == (250, 10, 20)  # largest x (right), largest y (top)
    np.testing.assert_array_equal(shown.affine, np.eye(4))
    grey = image_volume(np.arange(6).reshape(2, 3))
    assert grey.shape == (3, 2, 1) and grey[2, 1, 0] == 2 and grey[0, 0, 0] == 3


def test_png_is_lossless():
    rgb = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))), rgb)


def test_launch_options_from_arguments_then_environment(tmp_path):
    env = {CASE_ENV: str(tmp_path / "env-case"), DATA_ROOT_ENV: str(tmp_path / "root")}
    options = parse_launch_options(["--case", str(tmp_path / "arg-case"), "-q", "tests/x.py"], env)
    assert options.case == tmp_path / "arg-case" and options.data_root == tmp_path / "root"
    assert parse_launch_options([], {}).case is None


def test_auto_method_follows_the_checkpoint(tmp_path, parity_dir):
    head = tmp_path / "head.safetensors"
    save_method_checkpoint(head, RandomWordHead(96).state_dict(), {"method": "rwda"})
    reference = str(parity_dir / "tiny_prompts_reference_format.pth")
    chosen = {prompts: detector_config("random:tiny", prompts, METHOD_AUTO, "cpu", 224).method
              for prompts in ("", str(head), reference, str(tmp_path / "missing.safetensors"))}
    assert list(chosen.values()) == ["ensemble", "rwda", "anomalyclip", "anomalyclip"]
    assert detector_config("random:tiny", str(head), "anomalyclip", "cpu", 224).method == "anomalyclip"


def test_browsing_is_confined_to_the_data_root(tmp_path):
    root = tmp_path / "root"
    (root / "series").mkdir(parents=True)
    (root / "brain.nii.gz").write_bytes(b"")
    (root / "notes.txt").write_text("x")
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", root / "escape")
    listing = list_entries(root)
    assert listing.entries == ["./", "brain.nii.gz", "series/"] and not listing.truncated
    assert resolve_under_root(root, "series/") == (root / "series").resolve()
    for outside in ("../secret", "escape", str(tmp_path / "secret")):
        with pytest.raises(UserInputError, match="not available here"):
            resolve_under_root(root, outside)


def test_a_dicom_series_is_listed_once_with_its_file_count(tmp_path):
    for index in range(3):
        (tmp_path / "ct" / "series").mkdir(parents=True, exist_ok=True)
        (tmp_path / "ct" / "series" / f"IM{index:04d}.dcm").write_bytes(b"")
    (tmp_path / "xray.DCM").write_bytes(b"")
    (tmp_path / "ct" / "mask.nii.gz").write_bytes(b"")
    listing = list_entries(tmp_path)
    assert listing.entries == ["./", "ct/", "ct/mask.nii.gz", "ct/series/"]
    assert [listing.label(entry) for entry in listing.entries] == [
        "./ (DICOM, 1 file)", "ct/", "ct/mask.nii.gz", "ct/series/ (DICOM, 3 files)"]


def test_zip_upload_cannot_escape_its_folder(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.txt", "x")
    with pytest.raises(UserInputError, match="leads outside"):
        save_upload([("bad.zip", buffer.getvalue())], tmp_path / "upload", 2**20)
    assert not (tmp_path / "evil.txt").exists()
    folder = save_upload([("../../a b.png", b"1"), ("a b.png", b"2")], tmp_path / "names", 2**20)
    assert sorted(p.name for p in folder.iterdir()) == ["1_a_b.png", "a_b.png"]
