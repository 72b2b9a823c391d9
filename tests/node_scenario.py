"""Runs a JavaScript scenario against one of the viewer's frontend modules in Node, for tests of browser code
that needs no browser. Without Node the test is skipped, except in CI, where it must run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

FRONTEND = Path(__file__).resolve().parents[1] / "app" / "niivue_frontend"
NODE_TIMEOUT_S = 60


def run_node_scenario(scenario: str, module: str) -> dict:
    """Runs `scenario` (an ES module whose process.argv[1] is `module`'s URL) and returns the JSON it prints."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is required in CI")
        pytest.skip("node is not installed")
    result = subprocess.run([node, "--input-type=module", "-e", scenario, (FRONTEND / module).as_uri()],
                            capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
