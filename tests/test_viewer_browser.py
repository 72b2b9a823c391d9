"""End to end in a real browser: `streamlit run app/viewer.py` on 127.0.0.1, driven by Debian's chromium.

Selenium is given the system chromium and chromedriver explicitly and runs offline (SE_OFFLINE), so no
browser or driver is ever downloaded. The test opens a generated `infer` output, moves the slice slider
with the keyboard, checks the overlay image and the score on the page, and saves a screenshot to
test-artifacts/viewer.png. Without chromium it is skipped, except in CI, where it must run.
"""

from __future__ import annotations

import json
import os
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

import pytest
from medclip_ad.config import DetectorConfig
from medclip_ad.inference.case import run_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.synthetic import make_synthetic_study

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACT = REPO_ROOT / "test-artifacts" / "viewer.png"
SERVER_START_TIMEOUT_S = 120
PAGE_TIMEOUT_S = 120
WINDOW_SIZE = (1400, 1000)
SLIDER_STEPS = 3

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver); in CI this test runs",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory) -> tuple[Path, dict]:
    """An `infer` output for a synthetic CT series, made with the tiny random CLIP."""
    root = tmp_path_factory.mktemp("viewer-browser")
    study = make_synthetic_study(root / "study")
    sources, _ = discover_cases([study.dicom_dir])
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224,
                                                device="cpu"))
    document = run_case(predictor, read_case(sources[0]), root / "results")
    return root / "results" / document["case"], document


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _streamlit(tmp_path: Path, viewer_options: list[str]) -> Iterator[str]:
    """The real Streamlit server on a free local port, stopped whatever happens; yields its URL."""
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", "app/viewer.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--", *viewer_options]
    environment = {**os.environ, "TMPDIR": str(tmp_path / "server-tmp")}  # where sessions keep their uploads
    (tmp_path / "server-tmp").mkdir(exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        _wait_for_health(port, process, log_path)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def server(case_folder, tmp_path):
    """The viewer on the generated case, with the data root its scan lies under."""
    with _streamlit(tmp_path, ["--case", str(case_folder[0]), "--data-root", str(case_folder[0].parents[1])]) as url:
        yield url


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
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                     f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _overlay_image(driver):
    """The overlay <img>, once it has loaded pixels (None until then)."""
    for image in driver.find_elements(By.CSS_SELECTOR, "img[alt^='overlay']"):
        if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image):
            return image
    return None


def _slice_slider(driver):
    """The keyboard-operable element of the 'Slice' slider (the sidebar's are opacity and threshold):
    a range input in current Streamlit, a role=slider thumb in older ones."""
    for slider in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSlider']"):
        if slider.text.startswith("Slice"):
            handles = slider.find_elements(By.CSS_SELECTOR, "input[type='range'], [role='slider']")
            return handles[0] if handles else None
    return None


def test_viewer_in_a_real_browser(server, browser, case_folder):
    _, document = case_folder
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(server)
    wait.until(_overlay_image)
    top = document["top_slices"][0]
    assert f"axial slice {top} of 31" in _overlay_image(browser).get_attribute("alt")

    handle = wait.until(_slice_slider)
    browser.execute_script("arguments[0].focus()", handle)  # the range input is visually hidden
    key = Keys.ARROW_LEFT if top >= SLIDER_STEPS else Keys.ARROW_RIGHT
    ActionChains(browser).send_keys(key * SLIDER_STEPS).perform()
    moved = top - SLIDER_STEPS if key == Keys.ARROW_LEFT else top + SLIDER_STEPS
    wait.until(lambda d: (img := _overlay_image(d)) is not None
               and f"axial slice {moved} of 31" in img.get_attribute("alt"))

    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Case score" in body and f"{document['score']:.4f}" in body
    assert "RANDOM WEIGHTS" in body
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACT))


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
