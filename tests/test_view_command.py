"""`medclip-ad view` and `bundle-path`: what they start or print, and their one-line refusals."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from medclip_ad.cli import view
from medclip_ad.cli.main import build_parser, main
from medclip_ad.resources import bundle_dir, viewer_script


def _command(*argv: str) -> list[str]:
    return view.streamlit_command(build_parser().parse_args(["view", *argv]))


def test_view_runs_the_shipped_script_headless_on_localhost_with_the_case_and_data_root(tmp_path):
    (tmp_path / "case").mkdir()
    command = _command(str(tmp_path / "case"), "--data-root", str(tmp_path), "--port", "8611")
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(viewer_script())]
    options = dict(zip(command[5:command.index("--")][::2], command[5:command.index("--")][1::2]))
    assert options == {"--server.address": "127.0.0.1", "--server.port": "8611", "--server.headless": "true",
                       "--browser.gatherUsageStats": "false"}
    assert command[command.index("--") + 1:] == ["--case", str(tmp_path / "case"), "--data-root", str(tmp_path)]


@pytest.mark.parametrize("argv, message", [
    (["missing"], "missing: not a folder (give an infer output folder)"),
    (["--data-root", "missing"], "--data-root missing: not a folder"),
    (["--port", "70000"], "--port 70000: must be 1..65535"),
])
def test_view_refuses_bad_options_in_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["view", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"medclip-ad: error: {message}"


def test_bundle_path_prints_the_bundle_with_its_configs(capsys):
    assert main(["bundle-path"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == bundle_dir() and (printed / "configs" / "inference.json").is_file()
    assert (viewer_script().parent / "medclip_viewer" / "launch.py").is_file()


def test_the_shipped_viewer_hides_streamlit_developer_options_and_watches_no_sources():
    """Streamlit reads the .streamlit/config.toml beside the script it runs, so the installed viewer (and a
    checkout's) shows readers no Deploy button nor rerun/clear-cache entries, and sets up no source watcher
    (a developer's rerun-on-save, whose set-up after each new session's first run held the server for about
    a second while the page waited for Streamlit's scripts)."""
    config = tomllib.loads((viewer_script().parent / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] in ("viewer", "minimal")
    assert config["server"]["fileWatcherType"] == "none"
