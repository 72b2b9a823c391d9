"""Backbone loading from every supported source, and the errors for files that are not CLIP weights."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from medclip_ad.errors import UserInputError
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.modeling.vision_tower import resize_position_embedding
from safetensors.torch import save_file


class _Node(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _save_torchscript_archive(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive whose parameters carry OpenAI's key names, as OpenAI's releases do."""
    root = _Node()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            if not hasattr(node, part):
                node.add_module(part, _Node())
            node = getattr(node, part)
        node.register_parameter(leaf, torch.nn.Parameter(value.half(), requires_grad=False))
    torch.jit.script(root).save(str(path))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.fixture(scope="module")
def fixture_clip(parity_dir):
    return load_clip(str(parity_dir / "tiny_clip_openai_format.pt"))


def test_openai_state_dict_architecture_is_read_from_shapes(fixture_clip):
    model = fixture_clip.model
    assert model.visual.conv1.out_channels == 128 and len(model.visual.transformer.resblocks) == 24
    assert model.visual.transformer.resblocks[0].attn.num_heads == 2
    assert model.transformer.resblocks[0].attn.num_heads == 2 and model.text_projection.shape == (128, 96)
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())
    assert fixture_clip.random_weights is False


def test_torchscript_archive_loads_the_same_weights(fixture_clip, tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    _save_torchscript_archive(fixture_clip.model.state_dict(), path)
    loaded = load_clip(str(path))
    assert _same_weights(loaded.model, fixture_clip.model)  # fixture weights are fp16-exact
    assert type(loaded.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert (loaded.activation, loaded.activation_reason) == ("quick_gelu", "OpenAI TorchScript archive")


def test_open_clip_training_checkpoint_and_safetensors(fixture_clip, tmp_path, capsys):
    state = fixture_clip.model.state_dict()
    wrapped = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    loaded = load_clip(str(wrapped))
    assert _same_weights(loaded.model, fixture_clip.model)
    assert type(loaded.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"
    # An uncertain activation is announced and recorded as assumed, never silently guessed.
    assert loaded.activation == "gelu" and loaded.activation_reason.startswith("assumed")
    assert "pass --activation" in capsys.readouterr().err
    given = load_clip(str(wrapped), "quick_gelu")
    assert type(given.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert (given.activation, given.activation_reason) == ("quick_gelu", "--activation")
    assert capsys.readouterr().err == ""
    flat = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(flat))
    assert _same_weights(load_clip(str(flat)).model, fixture_clip.model)


def test_random_tiny_is_marked_and_reproducible():
    first, second = load_clip("random:tiny"), load_clip("random:tiny")
    assert first.random_weights and first.source == "random:tiny"
    assert _same_weights(first.model, second.model)


@pytest.mark.parametrize("writer, message", [
    (lambda p: None, "not found"),
    (lambda p: p.write_bytes(b"\x00garbage" * 10), "not a readable CLIP checkpoint"),
    (lambda p: torch.save([1, 2, 3], p), "not a CLIP checkpoint"),
    (lambda p: torch.save({"visual.proj": torch.zeros(2, 2)}, p), "missing"),
])
def test_files_that_are_not_clip_weights_get_one_clear_line(tmp_path, writer, message):
    path = tmp_path / "weights.pt"
    writer(path)
    with pytest.raises(UserInputError) as error:
        load_clip(str(path))
    assert str(path) in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_inconsistent_shapes_are_reported(fixture_clip, tmp_path):
    state = dict(fixture_clip.model.state_dict())
    state["ln_final.bias"] = torch.zeros(7)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(UserInputError, match="do not fit"):
        load_clip(str(path))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": _Node()}, path)  # a full module pickle: only loadable with code execution
    with pytest.raises(UserInputError, match="not a readable CLIP checkpoint"):
        load_clip(str(path))


def test_unknown_random_preset_and_offline_openai(monkeypatch):
    with pytest.raises(UserInputError, match="unknown random preset"):
        load_clip("random:huge")

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(UserInputError, match="--clip-weights PATH"):
        load_clip("openai")


def test_position_embedding_resize_is_bilinear_and_keeps_cls():
    grid = torch.arange(24 * 24 * 2, dtype=torch.float32).reshape(24 * 24, 2)
    embedding = torch.cat([torch.full((1, 2), -5.0), grid])
    resized = resize_position_embedding(embedding, 37)
    assert resized.shape == (1 + 37 * 37, 2) and torch.equal(resized[0], embedding[0])
    square = grid.reshape(1, 24, 24, 2).permute(0, 3, 1, 2)
    bilinear = F.interpolate(square, size=(37, 37), mode="bilinear", align_corners=False)
    assert torch.allclose(resized[1:], bilinear.permute(0, 2, 3, 1).reshape(-1, 2))
    assert torch.equal(resize_position_embedding(embedding, 24), embedding)
