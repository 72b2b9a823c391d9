"""End to end in a real browser: `streamlit run app/viewer.py` on 127.0.0.1, driven by Debian's chromium.

Selenium is given the system chromium and chromedriver explicitly and runs offline (SE_OFFLINE), so no
browser or driver is ever downloaded; WebGL runs on SwiftShader. The test opens a results folder of two
cases in a 1280x800 window, checks the whole WebGL canvas lies on the first screen (no Deploy button, no
truncated control), that it shows scan and overlay (first the volume's coarse preview, then the full
volume in its place; the O key hides the overlay: the pixels that change are the overlay's), scrolls slices
with the wheel and zooms with + while the server's debug log shows no script rerun, moves to the next case
with N (shown from the view the viewer prepared, with no reload when the page follows) and bookmarks its
slice with B before the page has followed, records a review of that case and finds review.json written with
that bookmark; a screenshot goes to test-artifacts/viewer.png. A 2-D PNG result shows its pixels and overlay
in the same view.
At the first image NiiVue has compiled only the shader programs it drew with (of about 48 it declares), and the
view that takes the full volumes linked those programs ahead.
Without chromium it is skipped, except in CI, where it must run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.case import run_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.synthetic import make_synthetic_study
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACT = REPO_ROOT / "test-artifacts" / "viewer.png"
SERVER_START_TIMEOUT_S = 120
PAGE_TIMEOUT_S = 300
WINDOW_SIZE = (1280, 800)  # a laptop screen: the image must fit without scrolling
SECOND_CASE = "second"
RUN_LOG_LINE = "Running script"
SETTLE_S = 1.0
WHEEL_NOTCHES = 3
WHEEL_DELTA = 120
# Pixel tests: a grey pixel's channels differ by less than GREY_SPREAD and its mean exceeds LIT_LEVEL.
GREY_SPREAD = 12
LIT_LEVEL = 30
MIN_SCAN_FRACTION = 0.05
OVERLAY_DIFFERENCE = 40
MIN_OVERLAY_FRACTION = 0.005
MIN_CANVAS_HEIGHT_PX = 300
# Just over the preview budget (preview_volume.PREVIEW_MAX_VOXELS): the viewer shows a preview first.
STUDY_SHAPE = (128, 128, 64)
IMAGE_SIZE_PX = (160, 200)  # the 2-D case: rows, columns

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver); in CI this test runs",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from server_process import stop_process  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "app"))  # the viewer's modules import by name, as Streamlit runs them
from medclip_viewer.cases import ResultFolder, item_key  # noqa: E402
from medclip_viewer.opening_view import viewer_case_id  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end tier: `pytest -m "not slow"` is the fast core tier


@pytest.fixture(scope="module")
def predictor() -> AnomalyPredictor:
    return AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224, device="cpu"))


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory, predictor) -> tuple[Path, dict]:
    """A results folder of two cases: one tiny-random-CLIP `infer` output of a synthetic CT series, copied
    under a second name with a lower score and half its map (the worklist reads it second; its own map file
    makes the viewer prepare it in a view of its own)."""
    root = tmp_path_factory.mktemp("viewer-browser")
    study = make_synthetic_study(root / "study", shape=STUDY_SHAPE)
    sources, _ = discover_cases([study.dicom_dir])
    document = run_case(predictor, read_case(sources[0]), root / "results")
    second = root / "results" / SECOND_CASE
    shutil.copytree(root / "results" / document["case"], second)
    scores = json.loads((second / "scores.json").read_text())
    scores.update(case=SECOND_CASE, score=document["score"] / 2)
    (second / "scores.json").write_text(json.dumps(scores))
    halved = nib.load(second / "anomaly_map.nii.gz")
    halved = nib.Nifti1Image(np.asarray(halved.dataobj) / 2, halved.affine, halved.header)
    nib.save(halved, second / "anomaly_map.nii.gz")
    return root / "results", document


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _streamlit(tmp_path: Path, viewer_options: list[str]) -> Iterator[str]:
    """The real Streamlit server on a free local port, stopped whatever happens; yields its URL. Its debug
    log (tmp_path/streamlit.log) counts script runs."""
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", "app/viewer.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--logger.level", "debug", "--", *viewer_options]
    environment = {**os.environ, "TMPDIR": str(tmp_path / "server-tmp")}  # where sessions keep their uploads
    (tmp_path / "server-tmp").mkdir(exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        _wait_for_health(port, process, log_path)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_process(process)


@pytest.fixture()
def server(results_folder, tmp_path):
    """The viewer on the generated results folder, with the data root its scans lie under; yields its URL
    and the log that counts script runs."""
    folder = results_folder[0]
    with _streamlit(tmp_path, ["--case", str(folder), "--data-root", str(folder.parent)]) as url:
        yield url, tmp_path / "streamlit.log"


@pytest.fixture(scope="module")
def case_folder(results_folder) -> tuple[Path, dict]:
    """The first case of the results folder on its own."""
    folder, document = results_folder
    return folder / document["case"], document


def _wait_for_health(port: int, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"streamlit not healthy after {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    """Headless Debian chromium through its own chromedriver; Selenium Manager stays offline."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"CI is set but {CHROMIUM} or {CHROMEDRIVER} is missing: .ci/run installs them with apt-get")
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                     "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def script_runs(log_path: Path) -> int:
    """How many times the server has run the viewer script (each interaction that reaches Python is one)."""
    return log_path.read_text(errors="replace").count(RUN_LOG_LINE)


def viewer_frame(driver):
    """The NiiVue component's iframe, once present."""
    frames = driver.find_elements(By.CSS_SELECTOR, "iframe[title*='niivue_slices']")
    return frames[0] if frames else None


def loaded_canvas(driver, previous: str | None = None):
    """Inside the viewer frame: the WebGL canvas once its full volumes are loaded (a new pair after
    `previous`)."""
    canvases = driver.find_elements(By.ID, "gl")
    ready = canvases[0].get_attribute("data-ready") if canvases else None
    full = bool(canvases) and canvases[0].get_attribute("data-resolution") == "full"
    return canvases[0] if ready and ready != previous and full else None


def marks(driver, name: str) -> int:
    """How often the viewer passed its performance mark `name` (viewer.js)."""
    return driver.execute_script("return performance.getEntriesByName(arguments[0]).length", f"viewer:{name}")


def canvas_pixels(canvas) -> np.ndarray:
    """What the canvas shows, as composited on screen (RGB)."""
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), dtype=np.int16)


def grey_fraction(pixels: np.ndarray) -> float:
    """Share of pixels that are lit and grey: the scan (the overlay is coloured, the background black)."""
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    return float(((spread < GREY_SPREAD) & (pixels.mean(axis=2) > LIT_LEVEL)).mean())


def assert_scan_and_overlay_drawn(browser, wait, canvas) -> np.ndarray:
    """The canvas shows the scan, and the overlay on top of it: O (which leaves the overlay off) changes
    enough of the picture. Returns the picture with the overlay."""
    time.sleep(SETTLE_S)
    with_overlay = canvas_pixels(canvas)
    ActionChains(browser).send_keys_to_element(canvas, "o").perform()
    wait.until(lambda d: "overlay off" in d.find_element(By.ID, "overlay-state").text)
    time.sleep(SETTLE_S)
    scan_only = canvas_pixels(canvas)
    assert grey_fraction(scan_only) > MIN_SCAN_FRACTION
    overlay_share = float((np.abs(with_overlay - scan_only).max(axis=2) > OVERLAY_DIFFERENCE).mean())
    assert overlay_share > MIN_OVERLAY_FRACTION, overlay_share
    return with_overlay


def crosshair(driver) -> str:
    return driver.find_element(By.ID, "readout").get_attribute("data-crosshair") or ""


def click_by_text(driver, selector: str, text: str) -> bool:
    """Click the element matching `selector` whose text is `text` (a script click: no tooltip in the way)."""
    for element in driver.find_elements(By.CSS_SELECTOR, selector):
        if element.text.strip() == text:
            driver.execute_script("arguments[0].click()", element)
            return True
    return False


def canvas_box(driver, frame) -> tuple[float, float, float]:
    """The canvas's top and bottom in the page's window, and the window's height (CSS pixels)."""
    driver.switch_to.default_content()
    top, height = driver.execute_script("return [arguments[0].getBoundingClientRect().top, window.innerHeight]", frame)
    driver.switch_to.frame(frame)
    inner_top, inner_bottom = driver.execute_script(
        "const box = document.getElementById('gl').getBoundingClientRect(); return [box.top, box.bottom]")
    return top + inner_top, top + inner_bottom, height


def truncated_texts(driver) -> list[str]:
    """Texts of the page's select boxes and buttons that do not fit their box (cut with an ellipsis)."""
    driver.switch_to.default_content()
    return driver.execute_script("""return [...document.querySelectorAll(
        "[data-baseweb='select'] div, [data-testid='stButton'] button *, [data-testid='stPopover'] button *")]
        .filter((e) => e.children.length === 0 && e.scrollWidth > e.clientWidth + 1).map((e) => e.textContent)""")


def settled(driver) -> bool:
    """The script run is over and nothing on the page is stale: a form clicked now is the current case's
    (during a rerun Streamlit still shows, and lets one click, the previous run's elements)."""
    driver.switch_to.default_content()
    return not driver.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget'], [data-stale='true']")


def main_text(driver) -> str:
    driver.switch_to.default_content()
    return driver.find_element(By.TAG_NAME, "body").text


def test_reading_a_worklist_in_the_browser(server, browser, results_folder):
    url, log_path = server
    folder, document = results_folder
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(url)
    frame = wait.until(viewer_frame)
    wait.until(lambda d: "Case score" in main_text(d))  # the score beside the viewer is drawn after it
    assert "case 1 of 2" in main_text(browser)
    body = main_text(browser)
    assert "Case score" in body and f"{document['score']:.4f}" in body and "RANDOM WEIGHTS" in body
    assert "Deploy" not in body and not truncated_texts(browser)
    # the shipped config sets up no source watcher (its set-up after a new session's run held the server)
    assert "Watcher created" not in log_path.read_text(errors="replace")
    browser.switch_to.frame(frame)
    canvas = wait.until(loaded_canvas)
    assert (marks(browser, "preview"), marks(browser, "upgraded")) == (1, 1)  # the preview first, then in its place
    # NiiVue compiled the few programs the 2-D slices draw with, not the ~48 it declares (lazy_shaders.js)
    compiled, declared = (int(canvas.get_attribute(f"data-programs-{count}")) for count in ("compiled", "declared"))
    assert 0 < compiled <= declared // 3, (compiled, declared)
    # the full volumes' view (a spare canvas) linked the programs the preview's view had used ahead of its first
    # draw, while the page went on (lazy_shaders.compileAhead)
    assert int(canvas.get_attribute("data-programs-ahead")) > 0
    first_pair = canvas.get_attribute("data-ready")
    wait.until(lambda d: crosshair(d))
    top, bottom, window_height = canvas_box(browser, frame)
    assert 0 <= top and bottom <= window_height, (top, bottom, window_height)  # the whole image, no scrolling
    assert bottom - top >= MIN_CANVAS_HEIGHT_PX
    assert browser.find_element(By.ID, "mark").text == "RANDOM WEIGHTS"

    # scan and overlay on the WebGL canvas; O hides the overlay in the browser
    with_overlay = assert_scan_and_overlay_drawn(browser, wait, canvas)
    ActionChains(browser).send_keys_to_element(canvas, "o").perform()

    # the wheel scrolls slices in the browser: the crosshair's slice changes, the script does not rerun
    runs_before, where_before = script_runs(log_path), crosshair(browser)
    for _ in range(WHEEL_NOTCHES):
        ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas, -canvas.size["width"] // 4,
                                                                            -canvas.size["height"] // 4),
                                                 0, WHEEL_DELTA).perform()
    wait.until(lambda d: crosshair(d) != where_before)
    time.sleep(SETTLE_S)
    assert not np.array_equal(canvas_pixels(canvas), with_overlay)

    # + zooms about the crosshair and 0 resets, in the browser too
    scrolled = canvas_pixels(canvas)
    ActionChains(browser).send_keys_to_element(canvas, "+").perform()
    wait.until(lambda d: "zoom 1.2x" in d.find_element(By.ID, "zoom-state").text)
    time.sleep(SETTLE_S)
    assert not np.array_equal(canvas_pixels(canvas), scrolled)
    ActionChains(browser).send_keys_to_element(canvas, "0").perform()
    wait.until(lambda d: not d.find_element(By.ID, "zoom-state").text)
    time.sleep(SETTLE_S)
    assert script_runs(log_path) == runs_before

    # N: the viewer shows the next case, which it prepared meanwhile, at once; the page follows (one script
    # run), and that run's render reloads and refreshes nothing. B right after N, before the page has
    # followed, bookmarks the crosshair's slice of the case now shown, and neither key is lost.
    second_id = viewer_case_id(item_key(ResultFolder((folder / SECOND_CASE).resolve())))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"canvas.spare[data-prepared='{second_id}']"))
    ActionChains(browser).send_keys_to_element(canvas, "n").send_keys("b").perform()
    switched = wait.until(lambda d: loaded_canvas(d, first_pair))
    assert switched.get_attribute("data-ready").startswith(second_id + "|")
    assert marks(browser, "swapped") == 1
    counts = (switched.get_attribute("data-loads"), switched.get_attribute("data-refreshes"))
    wait.until(lambda d: "case 2 of 2" in main_text(d))
    wait.until(settled)
    time.sleep(SETTLE_S)
    browser.switch_to.frame(wait.until(viewer_frame))
    shown = browser.find_element(By.ID, "gl")
    assert (shown.get_attribute("data-loads"), shown.get_attribute("data-refreshes")) == counts
    assert shown.get_attribute("data-ready") == switched.get_attribute("data-ready")

    # the reader records a review of the second case
    wait.until(settled)
    reader = browser.find_element(By.CSS_SELECTOR, "input[aria-label='Reader']")
    reader.send_keys("Dr Browser", Keys.TAB)
    # Streamlit re-renders the form while it reruns: look the elements up inside the wait (stale ones retry)
    wait.until(lambda d: click_by_text(d, "[data-testid='stRadio'] label", "agree"))
    time.sleep(SETTLE_S)
    wait.until(settled)
    wait.until(lambda d: click_by_text(d, "button", "Save review"))
    review_path = folder / SECOND_CASE / "review.json"
    wait.until(lambda d: review_path.exists())
    review = json.loads(review_path.read_text())
    assert review["verdict"] == "agree" and review["reader"] == "Dr Browser" and review["case"] == SECOND_CASE
    assert review["bookmarks"] == [{"plane": document["slice_axis"], "slice": document["top_slices"][0]}]
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACT))


def test_a_2d_image_in_the_niivue_view(predictor, browser, tmp_path_factory, tmp_path):
    """A PNG result opens in the same NiiVue view: its pixels and its overlay are on the WebGL canvas."""
    root = tmp_path_factory.mktemp("viewer-image")
    rows, columns = np.mgrid[:IMAGE_SIZE_PX[0], :IMAGE_SIZE_PX[1]]
    picture = 90 + 60 * np.sin(rows / 7.0) * np.cos(columns / 11.0)
    picture[(rows - 40) ** 2 + (columns - 90) ** 2 < 15 ** 2] = 250
    path = root / "photo.png"
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(path)
    sources, _ = discover_cases([path])
    document = run_case(predictor, read_case(sources[0]), root / "results")
    with _streamlit(tmp_path, ["--case", str(root / "results" / document["case"]), "--data-root", str(root)]) as url:
        wait = WebDriverWait(browser, PAGE_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,))
        browser.get(url)
        browser.switch_to.frame(wait.until(viewer_frame))
        canvas = wait.until(loaded_canvas)
        assert "|volumes/" in canvas.get_attribute("data-ready")  # scan and map by URL: the NiiVue view
        assert_scan_and_overlay_drawn(browser, wait, canvas)


def test_an_uploaded_result_cannot_show_a_server_file(case_folder, browser, tmp_path):
    """The upload attack: a zipped result whose scores.json names a scan elsewhere on the server."""
    folder, document = case_folder
    payload = tmp_path / "result.zip"
    with zipfile.ZipFile(payload, "w") as archive:
        archive.writestr("case/scores.json", json.dumps(dict(document, input=str(folder.parents[1] / "study"))))
        archive.write(folder / "anomaly_map.nii.gz", "case/anomaly_map.nii.gz")
    with _streamlit(tmp_path, []) as url:
        wait = WebDriverWait(browser, PAGE_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,))
        browser.get(url)
        upload = wait.until(lambda d: next(iter(d.find_elements(By.CSS_SELECTOR, "input[type='file']")), None))
        upload.send_keys(str(payload))
        wait.until(lambda d: "not available here" in d.find_element(By.TAG_NAME, "body").text)
        body = browser.find_element(By.TAG_NAME, "body").text
    [line] = [text for text in body.splitlines() if "not available here" in text]
    assert line.startswith("Cannot open case 1: the scanned input study: not available here"), line
    assert str(tmp_path) not in body and str(folder.parents[1]) not in body  # no server path on the page
    assert not browser.find_elements(By.CSS_SELECTOR, "img[alt^='scan']")  # nothing of the study is shown
