"""The floor under bench_viewer's warm first image: how much of it is Streamlit itself, how much is ours.

    python benchmarks/bench_viewer_floor.py [--shape 256 256 120] [--sessions 3] [--data DIR]

With bench_viewer's browser (same chromium flags and window) and its scored volumes, each page on its own
warm server (one session first, then `--sessions` new browser sessions, each timed from driver.get):

- trivial page: one st.write, until its text is on the screen;
- component page: only the viewer's NiiVue component on the first case's two display files (the files the
  viewer itself serves), until scan and map are drawn, with the viewer's marks;
- the viewer's script run on the server for a new session (Streamlit's AppTest, in-process, after a first
  session filled the caches), and the viewer functions that take the most of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_viewer import REPO_ROOT, breakdown, browser, first_image, make_results, start_streamlit, wait_for

APP_DIR = REPO_ROOT / "app"
MARKER = "floor marker"
TRIVIAL_PAGE = f'import streamlit as st\n\nst.write("{MARKER}")\n'
# The viewer page's frame around the component (wide layout, a sidebar, the 3:1 columns), so the canvas
# has the viewer's size; the display files are made once per server by the viewer's own code.
COMPONENT_PAGE = '''import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, sys.argv[1])
from medclip_viewer.case_cache import load_map_shared, open_result_shared  # noqa: E402
from medclip_viewer.confinement import Scope  # noqa: E402
from medclip_viewer.display_controls import default_threshold, overlay_controls  # noqa: E402
from medclip_viewer.intensity import window_mapping  # noqa: E402
from medclip_viewer.niivue_viewer import STILL_PLACEHOLDERS, map_files, niivue_view, peak_mm, scan_files  # noqa: E402


@st.cache_resource
def display(folder: str) -> dict:
    case = Path(folder)
    scan, result = open_result_shared(case, Scope.of(case.parent, case.parents[1]))
    anomaly_map = load_map_shared(result, scan)
    top = result.document["top_slices"][0]
    return dict(scan=scan_files(scan), anomaly_map=map_files(result, anomaly_map, scan.affine, volume=True),
                map_max=result.map_max,
                threshold=default_threshold(result, scan), plane=result.document["slice_axis"],
                focus_mm=peak_mm(anomaly_map, scan.affine, scan.slice_axis, top), focus_id=f"{folder}|{top}")


st.set_page_config(page_title="floor", layout="wide")
st.html(STILL_PLACEHOLDERS)
shown = display(sys.argv[2])
st.sidebar.write("sidebar")
with st.sidebar:
    style = overlay_controls(shown["map_max"], lambda: shown["threshold"])
viewer_column, _ = st.columns([3, 1])
with viewer_column:
    niivue_view(case_id="floor", scan=shown["scan"], anomaly_map=shown["anomaly_map"],
                mapping=window_mapping(400.0, 40.0), style=style, map_max=shown["map_max"], layout="multiplanar",
                plane=shown["plane"], focus_mm=shown["focus_mm"], focus_id=shown["focus_id"], height=900,
                random_weights=True, on_action=lambda action: None)
'''


def text_on_screen(driver, url: str) -> float:
    """Seconds from opening the page to the trivial page's text being on the screen."""
    start = time.monotonic()
    driver.get(url)
    wait_for(lambda: MARKER in driver.execute_script("return document.body.innerText"))
    driver.execute_async_script("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done))")
    return time.monotonic() - start


def sessions(work: Path, name: str, count: int, measure) -> list[float]:
    """One browser session to warm the server, then `count` new sessions measured by `measure(driver)`."""
    times = []
    for index in range(count + 1):
        driver = browser(work / f"profile-{name}-{index}")
        try:
            seconds, detail = measure(driver)
        finally:
            driver.quit()
        if index:
            times.append(seconds)
        print(f"  {name}, {'warm' if index else 'first'} session: {seconds:.2f} s {detail}".rstrip(), flush=True)
    return times


def spread(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f}) over {len(times)}"


def page_floor(work: Path, script: str, options: list[str], name: str, count: int, with_marks: bool) -> list[float]:
    page = work / f"{name.replace(' ', '_')}.py"
    page.write_text(script)
    log_path = work / f"{page.stem}.log"
    process, url = start_streamlit(page, options, log_path)
    try:
        def measure(driver):
            if not with_marks:
                return text_on_screen(driver, url), ""
            seconds = first_image(driver, url)
            return seconds, f"({breakdown(driver, log_path)})"
        return sessions(work, name, count, measure)
    finally:
        process.terminate()
        process.wait(timeout=30)


def viewer_script_run(results: Path, count: int) -> None:
    """The viewer's script run for new sessions on a warm server, timed in-process (Streamlit's AppTest,
    whose own overhead is included), and how far into it the NiiVue view is emitted."""
    from streamlit.testing.v1 import AppTest

    os.environ.update(MEDCLIP_AD_CASE=str(results), MEDCLIP_AD_DATA_ROOT=str(results.parent))
    sys.path.insert(0, str(APP_DIR))
    emitted: list[float] = []

    def run() -> tuple[float, float]:
        emitted.clear()
        start = time.perf_counter()
        app = AppTest.from_file(str(APP_DIR / "viewer.py"), default_timeout=300).run()
        if app.exception:
            raise SystemExit(f"viewer script failed: {app.exception[0].message}")
        return time.perf_counter() - start, (emitted[0] - start if emitted else float("nan"))

    total, _ = run()
    print(f"  viewer script, first session (imports, reads the case): {total:.2f} s")
    import medclip_viewer.reading_view as reading_view

    view = reading_view.niivue_view

    def timed_view(**options) -> None:
        emitted.append(time.perf_counter())
        view(**options)

    reading_view.niivue_view = timed_view
    timed = [run() for _ in range(count)]
    print(f"viewer script run, new session, warm server: {spread([whole for whole, _ in timed])}; "
          f"the NiiVue view emitted after {spread([first for _, first in timed])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 120))
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None,
                        help="keep the scored volumes in DIR and reuse them when it already holds them")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}, {os.cpu_count()} CPU cores")
    work = Path(tempfile.mkdtemp(prefix="bench-viewer-floor-"))
    try:
        data = args.data or work
        results = data / "results"
        if not (results / "study_1" / "scores.json").is_file():
            results = make_results(data, tuple(args.shape))
        trivial = page_floor(work, TRIVIAL_PAGE, [], "trivial page", args.sessions, with_marks=False)
        print(f"trivial page (one st.write) to its text on screen: {spread(trivial)}")
        component = page_floor(work, COMPONENT_PAGE, [str(APP_DIR), str(results / "study_0")], "component page",
                               args.sessions, with_marks=True)
        print(f"component page (only the NiiVue view) to scan and map drawn: {spread(component)}")
        viewer_script_run(results, args.sessions)
        print(f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
