"""The viewer as a reader meets it, in the browser the tests use (Debian chromium, WebGL on SwiftShader).

    python benchmarks/bench_viewer.py [--shape 256 256 120] [--steps 20] [--data DIR]

Makes two CT-like volumes of `--shape` with a bright lesion, scores them with the tiny random CLIP
(`random:tiny`, 224 px: the numbers are about the viewer, not the model), starts `streamlit run
app/viewer.py` on the results folder and measures:

- first image, cold server: from opening the page on a just-started server to the WebGL canvas showing
  scan and map (every import and the first read of the case included); for a volume with a preview
  (app/medclip_viewer/preview_volume.py) that is the preview, and the time to the full volume on screen
  follows it;
- first image, warm server: the same for a new browser session on that server, started SETTLE_S after
  the first one's image (the server reads the next case ahead meanwhile);
- slice step: one ArrowUp key or one wheel notch in the viewer until the next frame is drawn (median and
  95th percentile over `--steps`), with the number of script reruns they caused: arrow keys at once after
  the warm first image (while the full volumes load in the background), then, once the viewer has
  prepared the next case (it waits for the reader to pause), keys and wheel again;
- case switch: the N key, once the next case is prepared, until its scan and map are on the canvas;
- first image, warm server, returning browser: the warm session's browser started again on its profile (a
  reader's browser the next morning: its HTTP cache holds Streamlit's and the viewer's scripts). The goal is
  measured on the new browser above; this line shows what of it is the download and parsing of scripts.

Each first image and the switch also print the viewer's own marks (viewer.js), in seconds from the page's
start or the key press: where the time went (page and script run, WebGL set-up, download, parsing, GPU,
GPU work done, on screen), and the long tasks of the browser thread, the page's and the viewer's apart.

Goals on the 2-core development machine: warm first image < 3 s, slice step < 100 ms, case switch < 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = "1600,1000"
TIMEOUT_S = 600
# Pause between the cold and the warm session (the server reads the next case ahead meanwhile).
SETTLE_S = 3.0
RUN_LOG_LINE = "Running script"
# Streamlit's log lines start with the local time to the millisecond: "2026-12-02 01:50:00.123".
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
LOG_TIME_CHARS = 23
# Times one key press (or wheel notch) in the page until two animation frames later, i.e. drawn.
STEP_SCRIPT = """
const [kind, steps, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const canvas = document.getElementById("gl");
const rect = canvas.getBoundingClientRect();
const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
(async () => {
  const times = [];
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    if (kind === "key") {
      window.dispatchEvent(new KeyboardEvent("keydown", { key: i % 2 ? "ArrowDown" : "ArrowUp", bubbles: true }));
    } else {
      canvas.dispatchEvent(new WheelEvent("wheel", { deltaY: i % 2 ? -100 : 100, bubbles: true, cancelable: true,
        clientX: rect.left + rect.width / 4, clientY: rect.top + rect.height / 4 }));
    }
    await frame();
    await frame();
    times.push(performance.now() - start);
  }
  done(times);
})();
"""


def make_results(root: Path, shape: tuple[int, int, int]) -> Path:
    """Two scored CT-like volumes (different content, so a case switch loads new files)."""
    import nibabel as nib
    from medclip_ad.config import DetectorConfig
    from medclip_ad.inference.case import run_case
    from medclip_ad.inference.predictor import AnomalyPredictor
    from medclip_ad.io.discovery import discover_cases
    from medclip_ad.io.readers import read_case

    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224,
                                                device="cpu"))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        body = (grid ** 2).sum(axis=0) < 0.8
        volume = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, shape)
        centre = rng.uniform(-0.4, 0.4, 3)[:, None, None, None]
        volume[((grid - centre) ** 2).sum(axis=0) < 0.01] = 120.0
        path = root / "studies" / f"study_{seed}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.round(volume).astype(np.int16), np.diag([0.8, 0.8, 2.0, 1.0])), path)
        sources, _ = discover_cases([path])
        run_case(predictor, read_case(sources[0]), root / "results")
    return root / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(results: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    options = ["--case", str(results), "--data-root", str(results.parent)]
    return start_streamlit(REPO_ROOT / "app" / "viewer.py", options, log_path)


def start_streamlit(script: Path, options: list[str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run script -- options` on a free local port, with the debug log that dates script runs."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--logger.level", "debug", "--", *options]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return process, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"streamlit did not start: {log_path.read_text()[-2000:]}")


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                     "--disable-dev-shm-usage", f"--window-size={WINDOW}", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def wait_for(condition, poll_s: float = 0.02):
    from selenium.common.exceptions import TimeoutException

    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            value = condition()
        except TimeoutException:  # the page was too busy to answer a probe: ask again
            value = None
        if value:
            return value
        time.sleep(poll_s)
    raise SystemExit("timed out waiting for the viewer")


def first_image(driver, url: str) -> float:
    """Seconds from opening the page to the canvas showing its loaded scan and map (at either resolution)."""
    from selenium.webdriver.common.by import By

    def viewer_frames() -> list:
        frames = driver.find_elements(By.CSS_SELECTOR, "iframe[title*='niivue_slices']")
        failed = [] if frames else driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
        if failed:  # the page's script raised: say so at once rather than wait for a viewer that never comes
            raise SystemExit(f"the page at {url} failed: {failed[0].text.splitlines()[0]}")
        return frames

    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LONG_TASKS_RECORDER})
    start = time.monotonic()
    driver.get(url)
    frame = wait_for(viewer_frames)[0]
    driver.switch_to.frame(frame)
    wait_for(lambda: "|volumes/" in (driver.execute_script(
        "const c = document.getElementById('gl'); return c && c.dataset.ready") or ""))
    driver.execute_async_script(DRAWN_SCRIPT)
    return time.monotonic() - start


RESOLUTION_SCRIPT = "return document.getElementById('gl').dataset.resolution"
PREPARED_SCRIPT = "return document.querySelectorAll('canvas.spare[data-prepared]').length > 0"


def full_resolution(driver, first_resolution: str) -> str:
    """After a first image at `first_resolution`: when the full volumes replaced a preview
    (the viewer's mark, from the page's opening)."""
    if first_resolution == "full":
        return "at full resolution"
    wait_for(lambda: driver.execute_script(RESOLUTION_SCRIPT) == "full")
    upgraded = driver.execute_script(MARKS_SCRIPT, None)["upgraded"]
    return f"at {first_resolution} resolution; full resolution on screen at {upgraded:.2f} s"


# Once the viewer says it is ready: a 1-pixel read of the canvas waits for the GPU work queued so far
# (gpu), then two animation frames put the image on the screen (drawn).
DRAWN_SCRIPT = """
const done = arguments[arguments.length - 1];
const gl = document.getElementById("gl").getContext("webgl2");
performance.mark("viewer:seen");
gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
performance.mark("viewer:gpu");
requestAnimationFrame(() => requestAnimationFrame(() => { performance.mark("viewer:drawn"); done(); }));
"""
# The viewer's performance marks (viewer.js, and DRAWN_SCRIPT's), in the order a first image passes them.
MARKS = ("frame", "script", "fetch", "swapped", "attached", "fetched", "preview", "loaded", "applied", "ready", "seen",
         "gpu", "drawn", "upgraded")
MARKS_SCRIPT = """
const since = arguments[0];
const t0 = since === null ? performance.timeOrigin - window.parent.performance.timeOrigin : -since;
const seen = since === null ? { frame: t0 / 1000 } : {};
for (const entry of performance.getEntriesByType("mark")) {
  const name = entry.name.replace("viewer:", "");
  if ((since === null || entry.startTime >= since) && !(name in seen)) seen[name] = (t0 + entry.startTime) / 1000;
}
const canvas = document.getElementById("gl");
seen.canvas = `${canvas.width}x${canvas.height}`;
seen.origin = since === null ? window.parent.performance.timeOrigin : performance.timeOrigin + since;
return seen;
"""


# Every task that held the page's main thread (which the viewer's same-origin iframe shares) over 50 ms,
# recorded from the page's start (installed before any of the page's scripts run).
LONG_TASKS_RECORDER = """
if (window === window.top) {
  window.longTasks = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.longTasks.push([entry.startTime, entry.duration, entry.name]);
  }).observe({ type: "longtask", buffered: true });
}
"""
LONG_TASKS_SCRIPT = """
const since = arguments[0];
const shift = since === null ? 0 : performance.timeOrigin - window.top.performance.timeOrigin + since;
return window.top.longTasks.filter(([start]) => start >= shift).map(([start, length, name]) => [(start - shift) / 1000,
  length / 1000, name]);
"""
# Who a long task ran for: the Streamlit page itself, or the viewer (its same-origin iframe).
TASK_OWNERS = {"self": "page", "same-origin-descendant": "viewer"}
LONGEST_SHOWN = 4


def long_tasks(driver, since_ms: float | None = None) -> str:
    """The main thread's long tasks since the page's start (or since `since_ms` on the viewer's clock): their
    count, total, and the longest with the second each began."""
    tasks = [(start, length, TASK_OWNERS.get(name, name)) for start, length, name in
             driver.execute_script(LONG_TASKS_SCRIPT, since_ms)]
    totals = ", ".join(f"{owner} {sum(length for _, length, who in tasks if who == owner):.1f} s"
                       for owner in sorted({who for _, _, who in tasks}))
    longest = sorted(tasks, key=lambda task: -task[1])[:LONGEST_SHOWN]
    shown = ", ".join(f"{owner} {length:.2f} s at {start:.1f}" for start, length, owner in sorted(longest))
    return f"{len(tasks)} long tasks ({totals}); longest: {shown}"


def breakdown(driver, log_path: Path, since_ms: float | None = None) -> str:
    """Where a first image's time went, from the page's start (or a case switch's, from the key press at
    `since_ms` on the viewer's clock): the server starts the script run (run, from its debug log), the
    viewer frame made (frame), its script running (script), volumes asked for (fetch), WebGL set up
    (attached), files downloaded (fetched), the preview parsed (preview) or the full volumes (loaded), layers
    on the GPU (applied), ready to draw (ready), seen by the benchmark (seen), GPU work done (gpu), on the
    screen (drawn), the preview replaced by the full volumes (upgraded); and the long tasks."""
    seen = driver.execute_script(MARKS_SCRIPT, since_ms)
    started = [at - seen["origin"] / 1000 for at in script_run_starts(log_path) if at >= seen["origin"] / 1000]
    run = f"run {started[0]:.1f}, " if started else "no run, "
    times = run + ", ".join(f"{name} {seen[name]:.1f}" for name in MARKS if name in seen)
    return f"{times} s; canvas {seen['canvas']} px; main thread: {long_tasks(driver, since_ms)}"


def runs(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count(RUN_LOG_LINE)


def script_run_starts(log_path: Path) -> list[float]:
    """When the server started each script run (seconds since the epoch, from the debug log's local times)."""
    return [datetime.strptime(line[:LOG_TIME_CHARS], LOG_TIME_FORMAT).timestamp()
            for line in log_path.read_text(errors="replace").splitlines() if line.endswith(RUN_LOG_LINE)]


def summary(times_ms: list[float]) -> str:
    return f"median {np.median(times_ms):.0f} ms, p95 {np.percentile(times_ms, 95):.0f} ms over {len(times_ms)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 120))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", type=Path, default=None,
                        help="keep the scored volumes in DIR and reuse them when it already holds them")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"load {os.getloadavg()[0]:.1f}, {platform.platform()}")
    work = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    try:
        started = time.monotonic()
        data = args.data or work
        results = data / "results"
        if not (results / "study_1" / "scores.json").is_file():
            results = make_results(data, tuple(args.shape))
        print(f"volumes {' x '.join(map(str, args.shape))} (int16 CT-like), two cases scored or found in "
              f"{time.monotonic() - started:.0f} s")
        log_path = work / "streamlit.log"
        process, url = start_server(results, log_path)
        try:
            cold = browser(work / "profile-cold")
            seconds = first_image(cold, url)
            shown = cold.execute_script(RESOLUTION_SCRIPT)
            print(f"first image, cold server: {seconds:.2f} s; {full_resolution(cold, shown)} "
                  f"({breakdown(cold, log_path)})")
            cold.quit()
            time.sleep(SETTLE_S)
            driver = browser(work / "profile-warm")
            seconds = first_image(driver, url)
            shown = driver.execute_script(RESOLUTION_SCRIPT)
            before = runs(log_path)
            loading = driver.execute_async_script(STEP_SCRIPT, "key", args.steps)
            print(f"first image, warm server (new session): {seconds:.2f} s; {full_resolution(driver, shown)} "
                  f"({breakdown(driver, log_path)})")
            waited = time.monotonic()
            wait_for(lambda: driver.execute_script(PREPARED_SCRIPT))
            print(f"next case prepared {time.monotonic() - waited:.1f} s after the full volumes were on screen")
            keys = driver.execute_async_script(STEP_SCRIPT, "key", args.steps)
            wheel = driver.execute_async_script(STEP_SCRIPT, "wheel", args.steps)
            time.sleep(1.0)
            print(f"slice step, arrow key, at once after the first image: {summary(loading)}")
            print(f"slice step, arrow key, next case prepared: {summary(keys)}")
            print(f"slice step, wheel, next case prepared: {summary(wheel)}")
            print(f"script reruns during {3 * args.steps} slice steps: {runs(log_path) - before}")
            ready = driver.execute_script("return document.getElementById('gl').dataset.ready")
            start = time.monotonic()
            pressed_ms = driver.execute_script("const t = performance.now(); window.dispatchEvent("
                                               "new KeyboardEvent('keydown', {key: 'n', bubbles: true})); return t")
            driver.switch_to.default_content()

            def switched() -> bool:
                from selenium.webdriver.common.by import By

                driver.switch_to.default_content()
                frames = driver.find_elements(By.CSS_SELECTOR, "iframe[title*='niivue_slices']")
                if not frames:
                    return False
                driver.switch_to.frame(frames[0])
                now = driver.execute_script("const c = document.getElementById('gl'); return c && c.dataset.ready")
                return bool(now) and now != ready

            wait_for(switched)
            driver.execute_async_script(DRAWN_SCRIPT)
            print(f"case switch (N key): {time.monotonic() - start:.2f} s ({breakdown(driver, log_path, pressed_ms)})")
            driver.quit()
            time.sleep(SETTLE_S)
            returning = browser(work / "profile-warm")
            seconds = first_image(returning, url)
            print(f"first image, warm server, returning browser (new session, the browser's cache of the first kept): "
                  f"{seconds:.2f} s ({breakdown(returning, log_path)})")
            returning.quit()
        finally:
            process.terminate()
            process.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
