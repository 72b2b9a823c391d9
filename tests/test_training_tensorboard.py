"""`train --tensorboard` (and the bundle's `tensorboard` key): the loss parts and learning rate of every step
as TensorBoard scalars beside train_log.csv, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
from medclip_ad.cli.main import main
from medclip_ad.datasets import prepare_dataset
from medclip_ad.training.loop import LOG_FILE, TENSORBOARD_FOLDER

from mini_datasets import make_endo, make_kvasir

pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = ["--clip-weights", "random:tiny", "--image-size", "56", "--device", "cpu", "--batch-size", "4"]


@pytest.fixture(scope="module")
def manifest_paths(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("data")
    paths = []
    for name, folder in (("kvasir", make_kvasir(root / "Kvasir-SEG")), ("endo", make_endo(root / "endo"))):
        prepare_dataset(name, [folder]).save(root / f"{name}.json")
        paths.append(str(root / f"{name}.json"))
    return paths


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run / TENSORBOARD_FOLDER))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _log_rows(run: Path) -> list[dict[str, str]]:
    with open(run / LOG_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_step_of_train_log_is_a_tensorboard_scalar_and_a_resume_continues_the_steps(manifest_paths, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--manifest", *manifest_paths, "--out", str(run), "--epochs", "1", "--tensorboard",
                 *TINY]) == 0
    assert main(["train", "--manifest", *manifest_paths, "--out", str(run), "--epochs", "2", "--tensorboard",
                 "--resume", str(run / "epoch_001.safetensors"), *TINY]) == 0
    rows, scalars = _log_rows(run), _scalars(run)
    assert len(rows) == 6  # 10 images in batches of 4: three steps per epoch, two epochs
    assert [step for step, _ in scalars["train/loss"]] == list(range(6))  # the resumed run continues at step 3
    for column, tag in (("loss", "train/loss"), ("global_loss", "train/global_loss"),
                        ("local_loss", "train/local_loss")):
        assert [value for _, value in scalars[tag]] == pytest.approx([float(row[column]) for row in rows], abs=1e-5)
    assert [value for _, value in scalars["train/learning_rate"]] == pytest.approx([1e-3] * 6)  # the published lr
    assert [step for step, _ in scalars["train/epoch_mean_loss"]] == [1, 2]


def test_without_the_flag_nothing_is_written_for_tensorboard(manifest_paths, tmp_path):
    assert main(["train", "--manifest", *manifest_paths, "--out", str(tmp_path / "run"), "--epochs", "1",
                 *TINY]) == 0
    assert not (tmp_path / "run" / TENSORBOARD_FOLDER).exists()


def test_the_flag_without_the_extra_is_one_line_before_anything_loads(manifest_paths, tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else real_find_spec(name, *args))
    code = main(["train", "--manifest", *manifest_paths, "--out", str(tmp_path / "run"), "--tensorboard", *TINY])
    assert code != 0 and 'pip install "medclip-ad[tensorboard]"' in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
