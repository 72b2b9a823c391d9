"""Every entry of the bad-input corpus (tests/bad_input_corpus.py) through `medclip-ad`'s entry point.

Each must end with a non-zero exit, no traceback, an error line naming the file or option at fault, no
partial case folder or report, and its inputs byte-identical. All run in this one process through
`main(argv)` with the tiny model loaded once; a few also run as real processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from medclip_ad.cli.main import main
from medclip_ad.inference.worklist import RESULTS_TABLE

from bad_input_corpus import CORPUS, BadInput, Workspace, reuse_tiny_model

# An entry that takes longer than this has hung (most finish in well under a second).
HANG_SECONDS = 30


class Hung(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def tiny_model_loaded_once(tiny_backbone):
    """`random:tiny` built once for the whole corpus, and each detector built from it once; every other
    weights name loads as usual."""
    with pytest.MonkeyPatch.context() as patch:
        reuse_tiny_model(patch, tiny_backbone)
        yield


def tree(root: Path) -> dict[str, str]:
    """Every entry below `root` (links not followed) with a digest of its content or its file type."""
    listing: dict[str, str] = {}
    if not root.is_dir() or root.is_symlink():
        if root.is_file() and not root.is_symlink():
            listing["."] = hashlib.sha256(root.read_bytes()).hexdigest()
        return listing
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                listing[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(mode):
                listing[str(path.relative_to(root))] = f"link to {os.readlink(path)}"
            else:
                listing[str(path.relative_to(root))] = f"mode {stat.S_IFMT(mode):o}"
    return listing


def run_main(argv: list[str]) -> tuple[int | str, str]:
    """Exit code (or 'traceback'/'hang') and everything printed, as a user would see it."""
    output = io.StringIO()

    def hang(signum, frame):
        raise Hung()

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_SECONDS)
    try:
        with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
            try:
                code: int | str = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 2
            except Hung:
                code = "hang"
            except Exception as error:  # what escapes main is what a user sees as a traceback
                code = "traceback"
                print(f"Traceback: {type(error).__name__}: {error}", file=output)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, output.getvalue()


def check(item: BadInput, root: Path) -> list[str]:
    """What is wrong with how the command handled this entry; empty when it did everything right."""
    workspace = Workspace(root)
    trial = item.build(workspace)
    inputs_before, out_before = tree(workspace.inputs), tree(workspace.out)
    code, output = run_main(trial.argv)
    problems = []
    if code in ("traceback", "hang"):
        problems.append(code)
    elif code == 0:
        problems.append("accepted")
    if "Traceback" in output and "traceback" not in problems:
        problems.append("traceback")
    if "unexpected" in output:  # caught, one line, but nobody anticipated it: a defect all the same
        problems.append("unexpected error")
    error_lines = [line for line in output.splitlines() if "error:" in line]
    if not any(trial.names in line for line in error_lines):
        problems.append(f"no error line naming {trial.names!r}")
    if tree(workspace.inputs) != inputs_before:
        problems.append("inputs changed")
    new = set(tree(workspace.out)) - set(out_before)
    unexpected = [name for name in new if name.split(os.sep)[0] not in trial.written
                  and not (trial.written and name == RESULTS_TABLE)]
    if unexpected:
        problems.append(f"left in --out: {sorted(unexpected)[:3]}")
    return [f"{problem} | {output.strip()[-400:]!r}" for problem in problems]


@pytest.mark.parametrize("item", CORPUS, ids=[item.id for item in CORPUS])
def test_bad_input_gets_one_clear_line(item, tmp_path):
    assert check(item, tmp_path) == []


def test_the_corpus_covers_every_kind_of_input():
    groups = {item.group for item in CORPUS}
    assert len(CORPUS) >= 100 and groups == {"dicom", "nifti", "image", "checkpoint", "manifest", "path", "option"}


@pytest.mark.parametrize("name", ["nifti:dim0_nine", "dicom:claims_20_frames_holds_one", "path:out_is_a_file"])
def test_as_a_real_process(name, tmp_path):
    item = next(item for item in CORPUS if item.id == name)
    trial = item.build(Workspace(tmp_path))
    result = subprocess.run([sys.executable, "-m", "medclip_ad", *trial.argv], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error:" in line and trial.names in line]
