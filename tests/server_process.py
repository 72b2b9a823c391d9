"""Stopping a server a test started: politely first, then for certain, so no test leaves one running."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
