"""Attack 5 and the upload limits of attack 4: inputs that used to end in a traceback with server paths
(deep JSON, a zip member that is both a file and a folder, --overwrite onto a link) get one line, and
uploads cannot pile up on the server."""

from __future__ import annotations

import gc
import io
import os
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from attack_tools import assert_one_line, assert_untouched, touched_paths
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case_folder import staged_case_folder
from medclip_ad.methods.anomalyclip.checkpoint import load_prompt_checkpoint
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "app"))

from medclip_viewer.cases import load_result  # noqa: E402
from medclip_viewer.uploads import save_upload  # noqa: E402

DEPTH = 50_000


def test_deeply_nested_safetensors_metadata_is_one_line(tmp_path):
    path = tmp_path / "prompts.safetensors"
    save_file({"ctx_normal": torch.zeros(2, 4)}, str(path),
              metadata={"format": "medclip-ad-prompts", "provenance": "[" * DEPTH + "]" * DEPTH})
    with pytest.raises(UserInputError) as error:
        load_prompt_checkpoint(path)
    assert_one_line(str(error.value), str(path), "nested too deeply")


def test_deeply_nested_scores_json_is_one_line_without_the_server_path(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    (case / "scores.json").write_text("{\"case\": " + "[" * DEPTH + "]" * DEPTH + "}")
    with pytest.raises(UserInputError) as error:
        load_result(case)
    assert_one_line(str(error.value), "scores.json", "nested too deeply", server_paths=(tmp_path,))


def test_a_zip_holding_a_file_and_a_folder_of_the_same_name_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("series/a", b"file")
        archive.writestr("series/a/b.png", b"png")
    with pytest.raises(UserInputError) as error:
        save_upload([("series.zip", buffer.getvalue())], tmp_path / "upload", 2**20)
    assert_one_line(str(error.value), "series.zip", "both a file and a folder", server_paths=(tmp_path,))
    assert not (tmp_path / "upload").exists()


def test_overwrite_onto_a_case_folder_that_is_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not yours")
    out = tmp_path / "results"
    out.mkdir()
    os.symlink(outside, out / "case")
    with touched_paths() as touched, pytest.raises(UserInputError) as error:
        with staged_case_folder(out, "case", overwrite=True):
            pass
    assert_one_line(str(error.value), str(out / "case"), "symbolic link")
    assert_untouched(touched, outside)
    assert (outside / "keep.txt").read_text() == "not yours" and (out / "case").is_symlink()


def test_an_upload_over_its_budget_leaves_nothing_behind(tmp_path):
    with pytest.raises(UserInputError) as error:
        save_upload([("a.png", bytes(600)), ("b.png", bytes(600))], tmp_path / "upload", 1000)
    assert_one_line(str(error.value), "b.png", "more than the", server_paths=(tmp_path,))
    assert not (tmp_path / "upload").exists()


def test_session_folders_go_with_their_session_and_stale_ones_at_start(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    from medclip_viewer import state

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    stale = tmp_path / f"{state.WORKDIR_PREFIX}999999999-old"
    stale.mkdir()
    (stale / "upload.dcm").write_bytes(b"left by a killed server")
    state._remove_folders_of_stopped_servers.clear()
    at = AppTest.from_file(str(Path(state.__file__).parents[1] / "viewer.py"), default_timeout=120).run()
    assert not at.exception
    assert not stale.exists()
    assert len(state.session_folders()) == 1  # the page's own session
    session = state.new_session()
    (session.workdir / "uploads").mkdir()
    (session.workdir / "uploads" / "scan.dcm").write_bytes(b"uploaded")
    folder = session.workdir
    del session
    gc.collect()
    assert not folder.exists()
