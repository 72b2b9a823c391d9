"""The wheel as a user gets it: built from this checkout, installed non-editable into a fresh environment,
run from a foreign folder: the command line, the demo, the viewer and the bundle's inference config.

The fresh environment reuses the test environment's dependencies (a .pth file names its site-packages)
instead of downloading them again, so only the wheel itself is installed, and nothing of this checkout
(no PYTHONPATH, no editable install) is on the path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end tier: `pytest -m "not slow"` is the fast core tier

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300
VIEWER_START_TIMEOUT_S = 90
# Everything the wheel must carry besides the package's modules: the viewer and the bundle, mapped.
SHIPPED = ("medclip_ad/py.typed", "medclip_ad/share/app/viewer.py", "medclip_ad/share/app/medclip_viewer/launch.py",
           "medclip_ad/share/bundles/anomalyclip_zeroshot_medical/configs/inference.json",
           "medclip_ad/share/bundles/anomalyclip_zeroshot_medical/configs/metadata.json",
           "medclip_ad/share/bundles/anomalyclip_zeroshot_medical/configs/train.json",
           "medclip_ad/deploy/app.py", "medclip_ad/deploy/app.yaml",
           "medclip_ad/share/app/medclip_viewer/niivue/build/index.html",
           "medclip_ad/share/app/medclip_viewer/niivue/build/viewer.js")
# The viewer's frontend source and a developer's node_modules stay out (app/niivue_frontend is not shipped).
NOT_SHIPPED = ("node_modules", "niivue_frontend", "package.json", "build.mjs")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel, install it into a new venv, and return the venv's paths and a clean environment."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--wheel-dir",
                            str(work / "dist"), str(REPO_ROOT)], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert build.returncode == 0, build.stderr
    (wheel,) = (work / "dist").glob("medclip_ad-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    (site_packages / "test_environment_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=TIMEOUT_S,
                             env=environment)
    assert install.returncode == 0, install.stderr
    foreign = work / "elsewhere"
    foreign.mkdir()
    return {"wheel": wheel, "bin": env_dir / "bin", "python": python, "site": site_packages, "env": environment,
            "cwd": foreign}


def _run(installed: dict, *command: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                          timeout=timeout)


def test_the_wheel_carries_the_viewer_and_the_bundle(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    assert set(SHIPPED) <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in names if any(part in name for part in NOT_SHIPPED)]


def test_the_installed_package_is_the_one_that_runs(installed):
    result = _run(installed, str(installed["python"]), "-c", "import medclip_ad; print(medclip_ad.__file__)")
    assert Path(result.stdout.strip()).is_relative_to(installed["site"]), result.stderr
    help_text = _run(installed, str(installed["bin"] / "medclip-ad"), "--help")
    assert help_text.returncode == 0 and "view" in help_text.stdout and "bundle-path" in help_text.stdout


def test_bundle_path_points_into_the_installed_package(installed):
    result = _run(installed, str(installed["bin"] / "medclip-ad"), "bundle-path")
    bundle = Path(result.stdout.strip())
    assert result.returncode == 0 and bundle.is_relative_to(installed["site"]), result.stderr
    assert (bundle / "configs" / "inference.json").is_file()
    as_module = _run(installed, str(installed["python"]), "-m", "medclip_ad.bundle")
    assert Path(as_module.stdout.strip()) == bundle


def test_pip_check_is_clean(installed):
    result = _run(installed, sys.executable, "-m", "pip", "--python", str(installed["python"]), "check")
    assert result.returncode == 0, result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_demo_then_view_then_the_bundle_from_a_foreign_folder(installed):
    cwd = installed["cwd"]
    demo = _run(installed, str(installed["bin"] / "medclip-ad"), "demo", "--clip-weights", "random:tiny",
                "--image-size", "224", "--device", "cpu")
    assert demo.returncode == 0, demo.stderr
    view_line = next(line for line in demo.stdout.splitlines() if "Open in the viewer" in line)
    view_command = view_line.split(":", 1)[1].split()
    assert view_command[:2] == ["medclip-ad", "view"]
    case_dir = cwd / view_command[2]
    assert (case_dir / "scores.json").is_file()

    port = _free_port()
    viewer = subprocess.Popen([str(installed["bin"] / "medclip-ad"), "view", *view_command[2:], "--port", str(port)],
                              cwd=cwd, env=installed["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + VIEWER_START_TIMEOUT_S
        while (answer := _health(port)) is None and viewer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert answer == "ok", f"viewer exited {viewer.poll()}" if viewer.poll() is not None else "no answer"
    finally:
        viewer.terminate()
        output = viewer.communicate(timeout=30)[0]
    assert f"127.0.0.1:{port}" in output

    bundle = Path(_run(installed, str(installed["bin"] / "medclip-ad"), "bundle-path").stdout.strip())
    result = _run(installed, str(installed["python"]), "-m", "monai.bundle", "run", "--config_file",
                  str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
                  "--input_path", str(cwd / "medclip-ad-demo" / "study" / "synthetic_ct.nii.gz"),
                  "--output_dir", str(cwd / "bundle_results"), "--method", "ensemble",
                  "--clip_weights", "random:tiny", "--image_size", "224", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((cwd / "bundle_results" / "synthetic_ct" / "scores.json").read_text())
    assert document["model"]["method"] == "ensemble" and document["model"]["random_weights"] is True
    assert len(document["slice_scores"]) == 32
