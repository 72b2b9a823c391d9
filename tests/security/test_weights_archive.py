"""Attack 1: a TorchScript weights archive runs code when `torch.jit.load` reads it. The loader must read
OpenAI-style archives' tensors and refuse, with one line and no side effect, anything code would rebuild."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import pytest
import torch
from medclip_ad.errors import UserInputError
from medclip_ad.modeling.clip_backbone import load_clip


class _WritesAFile(torch.nn.Module):
    """The payload: TorchScript's __setstate__ runs inside torch.jit.load and writes through a shared mmap."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:  # noqa: UP006 (TorchScript needs typing.Tuple)
        return (self.weight, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:  # noqa: UP006
        self.weight = state[0]
        self.target = state[1]
        self.training = state[2]
        written = torch.from_file(state[1], True, 8, dtype=torch.uint8).fill_(65)
        self.weight = self.weight + written.float().sum() * 0.0


class _RunsAShell:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch '{self.target}'",))


@pytest.fixture(autouse=True)
def _no_jit_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the loader does, it must not hand the file to torch.jit.load."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("torch.jit.load was called on a user's file")
    monkeypatch.setattr(torch.jit, "load", refuse)


def _quiet_jit(function, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return function(*args)


def _assert_one_line(error: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert all(word in message for word in words), message


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_a_traced_clip_archive_gives_the_outputs_of_its_state_dict(tiny_backbone, tmp_path):
    model = tiny_backbone.model
    images, tokens = torch.randn(1, 3, 336, 336), torch.randint(0, 49408, (1, 77))
    archive = tmp_path / "ViT-tiny-traced.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, (images, tokens), check_trace=False).save(str(archive))
    plain = tmp_path / "ViT-tiny-state.pt"
    torch.save(model.state_dict(), plain)
    from_archive, from_state = load_clip(str(archive)).model, load_clip(str(plain)).model
    with torch.no_grad():
        assert torch.equal(from_archive.encode_image(images), from_state.encode_image(images))
        assert torch.equal(from_archive.encode_text(tokens), from_state.encode_text(tokens))


def test_an_archive_whose_setstate_writes_a_file_is_refused_without_writing(tmp_path, monkeypatch):
    target = tmp_path / "outside" / "written_by_the_archive"
    target.parent.mkdir()
    archive = tmp_path / "weights.pt"
    _quiet_jit(torch.jit.script, _WritesAFile(str(target))).save(str(archive))
    before = _listing(tmp_path)
    with pytest.raises(UserInputError) as error:
        load_clip(str(archive))
    _assert_one_line(error, archive, "refused", "__setstate__")
    assert not target.exists() and _listing(tmp_path) == before
    monkeypatch.undo()  # the payload is real: torch.jit.load itself writes the file
    _quiet_jit(torch.jit.load, str(archive))
    assert target.read_bytes() == b"A" * 8


def _hand_made_archive(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", data_pkl)
        archive.writestr("model/code/__torch__.py", "class Model(Module):\n  pass\n")
        for key, data in (storages or {}).items():
            archive.writestr(f"model/data/{key}", data)


def test_an_archive_whose_pickle_calls_a_function_is_refused(tmp_path):
    target = tmp_path / "touched_by_the_archive"
    archive = tmp_path / "weights.pt"
    _hand_made_archive(archive, pickle.dumps({"visual.proj": _RunsAShell(target)}, protocol=2))
    with pytest.raises(UserInputError) as error:
        load_clip(str(archive))
    _assert_one_line(error, archive, "refused", "system")
    assert not target.exists()


class _Storage:
    """Pickles as TorchScript's storage reference; the tensor layout is chosen by the test."""


class _LayoutPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", 4) if isinstance(obj, _Storage) else None


class _Tensor:
    def __init__(self, size, stride):
        self.size, self.stride = size, stride

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (_Storage(), 0, self.size, self.stride, False, {}))


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    buffer = io.BytesIO()
    _LayoutPickler(buffer, protocol=2).dump({"visual.proj": _Tensor((1000, 1000), (1000, 1))})
    archive = tmp_path / "weights.pt"
    _hand_made_archive(archive, buffer.getvalue(), {"0": bytes(16)})
    with pytest.raises(UserInputError) as error:
        load_clip(str(archive))
    _assert_one_line(error, archive, "reaches past its storage")
