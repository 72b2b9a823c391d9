"""What keeps the viewer fast: the reading path imports no torch, MONAI or open_clip; opened cases and
display files are shared across sessions by file version (and read afresh when a file changes); the
worklist's next case is read ahead; the score plot is a static, clickable chart; inference runs in a
background job; the model panel starts from the open result's provenance. Speed itself is measured in
benchmarks/bench_viewer.py, not here.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.config import CaseOptions, DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import run_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan
from medclip_ad.io.synthetic import make_synthetic_study

APP_DIR = Path(__file__).resolve().parents[1] / "app"
sys.path.insert(0, str(APP_DIR))  # the viewer's modules import by name, as Streamlit runs them

from medclip_viewer import case_cache, niivue_viewer  # noqa: E402
from medclip_viewer.confinement import Scope  # noqa: E402
from medclip_viewer.model import model_input, parse_layers, start_inference  # noqa: E402
from medclip_viewer.model_panel import NO_CHECKPOINT, provenance_choices  # noqa: E402
from medclip_viewer.score_plot import SELECTION, selected_slice, slice_score_spec  # noqa: E402
from medclip_viewer.state import KEY_CLIP_WEIGHTS, KEY_IMAGE_SIZE, KEY_LAYERS, KEY_METHOD, KEY_PROMPTS  # noqa: E402

FAST_CONFIG = DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224, device="cpu")
HEAVY_MODULES = ("torch", "monai", "open_clip")
JOB_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict:
    """A synthetic CT study (DICOM series and NIfTI) and a tiny-model `infer` case of its NIfTI."""
    root = tmp_path_factory.mktemp("speed")
    study = make_synthetic_study(root / "data" / "study")
    [source] = discover_cases([study.nifti_path])[0]
    document = run_case(AnomalyPredictor(FAST_CONFIG), read_case(source), root / "data" / "results")
    return {"study": study, "case": root / "data" / "results" / document["case"], "root": root / "data"}


def test_reading_and_showing_a_case_imports_no_torch_monai_or_open_clip(scored):
    """The viewer's modules import, and a result with its NIfTI scan and a PNG are read and turned into
    display files, in a fresh interpreter that never loads the model stack; a DICOM series then loads no
    MONAI or open_clip either (ITK's own Python wrapping imports torch when it is installed)."""
    png = scored["root"] / "photo.png"
    from PIL import Image

    Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)).save(png)
    script = f"""
import sys
sys.path.insert(0, {str(APP_DIR)!r})
from pathlib import Path
import medclip_viewer.open_panel, medclip_viewer.reading_view, medclip_viewer.review_panel
import medclip_viewer.model_panel, medclip_viewer.worklist_panel, medclip_viewer.verdict_panel
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan
from medclip_viewer.case_cache import load_map_shared, open_result_shared
from medclip_viewer.confinement import Scope
from medclip_viewer.niivue_viewer import map_files, scan_files
heavy = lambda: sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules)
scan, result = open_result_shared(Path({str(scored['case'])!r}), Scope.of(Path({str(scored['root'])!r})))
print(scan_files(scan).full, map_files(result, load_map_shared(result, scan), scan.affine, volume=True).full)
read_case(discover_cases([Path({str(png)!r})])[0][0])
print(heavy())
read_case(discover_cases([Path({str(scored['study'].dicom_dir)!r})])[0][0])
print(heavy())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    urls, after_nifti, after_dicom = done.stdout.strip().splitlines()[-3:]
    assert urls.count("volumes/") == 2 and after_nifti == "[]", (urls, after_nifti)
    assert after_dicom in ("[]", "['torch']"), after_dicom


def test_an_unchanged_case_is_shared_and_a_changed_one_read_again(scored, tmp_path):
    case = tmp_path / "results" / "case"
    shutil.copytree(scored["case"], case)
    document = json.loads((case / "scores.json").read_text())
    document["input"] = str(scored["study"].nifti_path)
    (case / "scores.json").write_text(json.dumps(document))
    scope = Scope.of(tmp_path, scored["root"])
    scan, result = case_cache.open_result_shared(case, scope)
    again_scan, again_result = case_cache.open_result_shared(case, scope)
    assert again_scan is scan and again_result is result  # one object for every session
    assert scan.array.dtype == np.int16 and np.array_equal(scan.array, scored["study"].volume_hu)  # as stored
    anomaly_map = case_cache.load_map_shared(result, scan)
    assert case_cache.load_map_shared(result, scan) is anomaly_map
    start = case_cache.map_percentile_shared(result, scan, 90.0)  # the threshold's start, once per map version
    assert start == pytest.approx(float(np.percentile(anomaly_map, 90.0)))

    document["score"] = 0.123  # infer run again into the same folder: new version, read afresh
    (case / "scores.json").write_text(json.dumps(document))
    changed_scan, changed_result = case_cache.open_result_shared(case, scope)
    assert changed_result is not result and changed_result.document["score"] == 0.123
    image = nib.load(result.map_path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 0.5, image.affine), result.map_path)
    assert np.allclose(case_cache.load_map_shared(changed_result, changed_scan), anomaly_map * 0.5, atol=1e-6)
    assert case_cache.map_percentile_shared(changed_result, changed_scan, 90.0) == pytest.approx(start * 0.5, rel=1e-5)


def test_volumes_are_kept_in_their_stored_type_and_scored_as_float32():
    """The cache keeps a whole-number volume in the smallest integer type that holds it (what the file
    stores), leaves fractional, non-finite or 2-D data alone, shows the same display file either way, and
    inference gets float32 back."""
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    hu = np.random.default_rng(0).integers(-1024, 3000, (12, 10, 6)).astype(np.float32)

    def volume(array: np.ndarray) -> Scan:
        return Scan("v", Path("v.nii.gz"), "volume", array, affine)

    compact = case_cache.in_stored_type(volume(hu))
    assert compact.array.dtype == np.int16 and np.array_equal(compact.array, hu)
    assert case_cache.in_stored_type(volume(np.abs(hu) % 200)).array.dtype == np.uint8
    assert case_cache.in_stored_type(volume(hu + 40000)).array.dtype == np.uint16
    assert case_cache.in_stored_type(volume(hu - 40000)).array.dtype == np.int32
    for kept in (hu + 0.5, np.where(hu > 0, np.nan, hu), hu * 1e7):
        assert case_cache.in_stored_type(volume(kept.astype(np.float32))).array.dtype == np.float32
    picture = Scan("p", Path("p.png"), "image", np.full((8, 8), 3.0, dtype=np.float32))
    assert case_cache.in_stored_type(picture) is picture
    assert niivue_viewer.display_scan_bytes(compact) == niivue_viewer.display_scan_bytes(volume(hu))
    scored_input = model_input(compact)
    assert scored_input.array.dtype == np.float32 and np.array_equal(scored_input.array, hu)
    assert compact.array.dtype == np.int16  # the shared scan stays compact


def test_shared_table_makes_a_value_once_and_forgets_failures():
    table: case_cache.SharedTable[int] = case_cache.SharedTable(2)
    calls: list[str] = []
    started, release = threading.Event(), threading.Event()

    def slow() -> int:
        calls.append("slow")
        started.set()
        release.wait(10)
        return 7

    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(table.get("k", slow)))
    first.start()
    started.wait(10)
    second = threading.Thread(target=lambda: results.append(table.get("k", slow)))  # waits, does not redo
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert results == [7, 7] and calls == ["slow"]
    with pytest.raises(ValueError):
        table.get("bad", lambda: int("x"))
    assert "bad" not in table and table.get("bad", lambda: 3) == 3
    table.get("third", lambda: 4)  # two entries at most: the oldest goes
    assert "k" not in table


def test_the_next_case_is_read_ahead_with_its_display_files(scored, tmp_path):
    case = tmp_path / "ahead" / "case"
    shutil.copytree(scored["case"], case)
    scope = Scope.of(tmp_path, scored["root"])
    assert case_cache.read_ahead(case, scope).result(timeout=60) is True
    key = case_cache.case_key(case, scope)
    assert key in case_cache._cases
    scan, result = case_cache.open_result_shared(case, scope)
    served = niivue_viewer.served_folder()
    anomaly_map = case_cache.load_map_shared(result, scan)
    for url in (niivue_viewer.scan_files(scan).full,
                niivue_viewer.map_files(result, anomaly_map, scan.affine, volume=True).full):
        path = served / url
        assert path.is_file() and path.name.endswith(".nii.gz")
        image = nib.Nifti1Image.from_bytes(gzip.decompress(path.read_bytes()))
        assert image.shape == scan.array.shape
    shown = nib.Nifti1Image.from_bytes(gzip.decompress((served / niivue_viewer.scan_files(scan).full).read_bytes()))
    assert np.allclose(shown.get_fdata(), scan.array, atol=1e-3) and np.allclose(shown.affine, scan.affine)
    broken = tmp_path / "ahead" / "broken"
    broken.mkdir()
    (broken / "scores.json").write_text("{")
    assert case_cache.read_ahead(broken, scope).result(timeout=60) is False  # reported when opened, not here


def test_score_plot_is_static_per_case_and_a_click_picks_a_slice():
    spec = slice_score_spec([0.1, 0.5, 0.3, 0.9], [3, 1], "axial")
    assert spec == slice_score_spec([0.1, 0.5, 0.3, 0.9], [3, 1], "axial")  # nothing depends on the slice shown
    values = spec["data"]["values"]
    assert [v["slice"] for v in values] == [0, 1, 2, 3] and [v["top"] for v in values] == [False, True, False, True]
    [param] = [p for layer in spec["layer"] for p in layer.get("params", [])]
    assert param["name"] == SELECTION and param["select"]["type"] == "point" and param["select"]["nearest"]
    assert "legend" not in json.dumps(spec)  # no legend over the data
    assert selected_slice({SELECTION: [{"slice": 2}]}) == 2
    assert selected_slice({SELECTION: {"slice": 3.0}}) == 3
    assert selected_slice({SELECTION: []}) is None and selected_slice(None) is None
    assert selected_slice({SELECTION: [{"slice": True}]}) is None


def test_inference_job_runs_in_the_background_and_reports_its_states(scored, tmp_path):
    scan = read_case(discover_cases([scored["study"].nifti_path])[0][0])
    loading, release = threading.Event(), threading.Event()

    def held_load(config):
        loading.set()
        release.wait(JOB_TIMEOUT_S)
        return AnomalyPredictor(config)

    job = start_inference("key", "case", FAST_CONFIG, scan, tmp_path / "results", CaseOptions(), load=held_load)
    assert loading.wait(JOB_TIMEOUT_S) and job.running and job.state == "loading"  # the caller goes on meanwhile
    release.set()
    assert job.wait(JOB_TIMEOUT_S) and job.state == "done" and not job.running
    assert job.fraction == 1.0 and job.result is not None and job.result.document["kind"] == "volume"

    def refused(config):
        raise UserInputError("weights.pt: refused TorchScript archive")

    failed = start_inference("key2", "case", FAST_CONFIG, scan, tmp_path / "results", CaseOptions(), load=refused)
    assert failed.wait(JOB_TIMEOUT_S) and failed.state == "failed" and failed.result is None
    assert failed.error == "weights.pt: refused TorchScript archive"


def test_model_panel_starts_from_the_results_provenance(tmp_path):
    weights = tmp_path / "models"
    (weights / "sub").mkdir(parents=True)
    (weights / "sub" / "prompts.safetensors").write_bytes(b"x")
    offered = ["sub/prompts.safetensors"]
    model = {"method": "anomalyclip", "clip_weights": "random:tiny", "image_size": 336, "layers": [6, 12, 18, 24],
             "prompts": str(weights / "sub/prompts.safetensors")}
    choices, missing = provenance_choices(model, weights, offered)
    assert choices == {KEY_METHOD: "anomalyclip", KEY_CLIP_WEIGHTS: "random:tiny",
                       KEY_PROMPTS: "sub/prompts.safetensors", KEY_IMAGE_SIZE: 336, KEY_LAYERS: "6 12 18 24"}
    assert missing == []
    elsewhere = dict(model, clip_weights="/elsewhere/ViT-L-14-336px.pt", prompts=None, method="nonsense", layers=[])
    choices, missing = provenance_choices(elsewhere, weights, offered)
    assert choices == {KEY_PROMPTS: NO_CHECKPOINT, KEY_IMAGE_SIZE: 336}
    assert missing == ["its CLIP weights (ViT-L-14-336px.pt) are not offered here"]
    assert parse_layers("6, 12 18") == (6, 12, 18)
    for bad in ("", "0", "twelve", "-3"):
        with pytest.raises(UserInputError, match="block numbers"):
            parse_layers(bad)
