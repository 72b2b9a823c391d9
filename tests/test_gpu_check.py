"""benchmarks/gpu_check.sh runs on the CPU in its quick form, so the one-command GPU check cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end tier: `pytest -m "not slow"` is the fast core tier

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_quick_on_the_cpu(parity_dir: Path) -> None:
    environment = {**os.environ, "PYTHON": sys.executable, "MEDCLIP_AD_SHARED": str(parity_dir.parents[1])}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick"],
                            capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    parity = [line for line in lines if line.startswith("(a) parity")]
    assert len(parity) == 6 and all(line.endswith("PASS") for line in parity)
    assert any(line.startswith("(b) bf16 vs fp32") for line in lines)
    assert sum(line.startswith("(c) tiny@224") for line in lines) >= 2
    end_to_end = [line for line in lines if line.startswith("(d) infer")]
    assert len(end_to_end) == 1 and end_to_end[0].endswith("PASS") and "slices/s" in end_to_end[0]
    compiled = {line.split(" batch 2 ")[1].split("  ")[0]: line for line in lines if line.startswith("(e) tiny@224")}
    assert set(compiled) == {"eager", "compile inductor", "compile cuda-graphs"}
    assert "slices/s" in compiled["eager"] and "vs eager scores" in compiled["compile inductor"]
    assert "not run: --compile cuda-graphs: CUDA graphs need a CUDA device" in compiled["compile cuda-graphs"]
