"""The code base passes its linter (ruff, configured in pyproject.toml): no unused names, undefined names,
shadowed imports or lines over 120 characters in the package, the viewer, the tests or the benchmarks."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

CHECKED = ("medclip_ad", "app", "tests", "benchmarks")


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", *CHECKED],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
