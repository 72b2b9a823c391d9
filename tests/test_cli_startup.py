"""The command line answers --help, --version and argument errors without loading the model stack.

Argument parsing must import no torch, monai or open_clip (they cost seconds of CPU); the heavy imports
happen inside each subcommand's run(). The CPU time is read from the child process itself.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

HEAVY_MODULES = ("torch", "monai", "open_clip", "scipy", "sklearn", "highdicom", "SimpleITK", "itk", "streamlit")
# The budget for a command that only parses its arguments.
CPU_BUDGET_S = 1.0


def _run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m medclip_ad ARGS`, returning the result and the child's user + system CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run([sys.executable, "-m", "medclip_ad", *args], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return completed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("args, exit_code, stream, expected", [
    (("--help",), 0, "stdout", "infer"),
    (("--version",), 0, "stdout", "medclip-ad "),
    (("infer", "--help"), 0, "stdout", "--dicom-out"),
    (("train", "--help"), 0, "stdout", "--epochs"),
    (("evaluate", "--help"), 0, "stdout", "--compare"),
    (("infer", "scan.nii.gz"), 2, "stderr", "--out"),  # missing required option
    (("infer", "x", "--out", "y", "--aggregation", "median"), 2, "stderr", "invalid choice"),
])
def test_parsing_costs_under_a_second_of_cpu(args, exit_code, stream, expected):
    completed, cpu_seconds = _run_cli(*args)
    assert completed.returncode == exit_code, completed.stderr
    assert expected in getattr(completed, stream)
    assert cpu_seconds < CPU_BUDGET_S, f"medclip-ad {' '.join(args)}: {cpu_seconds:.2f} s of CPU"


def test_building_every_parser_imports_no_heavy_library():
    code = ("import sys; from medclip_ad.cli.main import build_parser; build_parser(); "
            f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert completed.stdout.strip() == ""


def test_top_level_exports_load_on_first_use():
    code = ("import sys, medclip_ad; cheap = 'torch' not in sys.modules; "
            "from medclip_ad import AnomalyPredictor, predict_scan, read_study; "
            "print(cheap, AnomalyPredictor.__module__, predict_scan.__module__, read_study.__module__, "
            "sorted(set(medclip_ad.__all__) - set(dir(medclip_ad))))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert completed.stdout.split() == ["True", "medclip_ad.inference.predictor", "medclip_ad.inference.case",
                                        "medclip_ad.io.readers", "[]"]
