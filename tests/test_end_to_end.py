"""Issue 4 end to end, through the command line only: prepare-data -> train -> resume -> evaluate.

Generated mini-datasets in the published Kvasir, BrainMRI and Endo layouts stand in for the downloads.
Prompts are trained on Kvasir + Endo (masks, both labels) with the tiny random backbone, then evaluated
on BrainMRI (labels only: image metrics) and Kvasir (all anomalous, with masks: pixel metrics). The
whole pipeline runs once per module; each test checks one promise of it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from medclip_ad.cli.main import main
from medclip_ad.evaluation import IMAGE_METRICS, METRICS, NOT_AVAILABLE, PIXEL_METRICS
from medclip_ad.methods.anomalyclip.checkpoint import load_prompt_checkpoint

from mini_datasets import make_brainmri, make_endo, make_kvasir

BACKBONE_ARGS = ("--clip-weights", "random:tiny", "--image-size", "224", "--device", "cpu")
EPOCHS = 2
# 10 training images in two equal steps per epoch, so an epoch's mean loss weighs every image alike.
TRAIN_BATCH_SIZE = 5
LAYOUTS = {"kvasir": make_kvasir, "endo": make_endo, "brainmri": make_brainmri}


@dataclass
class Pipeline:
    run: Path
    resumed: Path
    log_before_resume: list[dict[str, str]]
    evaluation: Path
    results: dict


def medclip_ad(*argv: str) -> None:
    """One `medclip-ad` command as a user types it; its printed output is not under test here."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(list(argv)) == 0, argv


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "train_log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("end_to_end")
    manifests = {}
    for name, make in LAYOUTS.items():
        manifests[name] = str(root / f"{name}.json")
        medclip_ad("prepare-data", name, "--source", str(make(root / "downloads" / name)), "--out", manifests[name])

    run = root / "run"
    medclip_ad("train", "--manifest", manifests["kvasir"], manifests["endo"], "--out", str(run),
               "--epochs", str(EPOCHS), "--batch-size", str(TRAIN_BATCH_SIZE), *BACKBONE_ARGS)

    resumed = root / "run_resumed"
    shutil.copytree(run, resumed)
    log_before_resume = read_log(resumed)
    medclip_ad("train", "--manifest", manifests["kvasir"], manifests["endo"], "--out", str(resumed),
               "--epochs", str(EPOCHS), "--batch-size", str(TRAIN_BATCH_SIZE), *BACKBONE_ARGS,
               "--resume", str(resumed / "epoch_001.safetensors"))

    evaluation = root / "evaluation"
    medclip_ad("evaluate", "--manifest", manifests["brainmri"], manifests["kvasir"], "--out", str(evaluation),
               "--prompts", str(run / "prompts.safetensors"), *BACKBONE_ARGS)
    results = json.loads((evaluation / "results.json").read_text())
    return Pipeline(run, resumed, log_before_resume, evaluation, results)


def test_training_writes_a_checkpoint_per_epoch_and_the_loss_decreases(pipeline: Pipeline) -> None:
    for name in ("epoch_001.safetensors", "epoch_002.safetensors", "prompts.safetensors", "train_log.csv"):
        assert (pipeline.run / name).is_file(), name
    rows = read_log(pipeline.run)
    losses = {epoch: [float(row["loss"]) for row in rows if row["epoch"] == str(epoch)] for epoch in (1, 2)}
    assert len(losses[1]) == len(losses[2]) == 2
    assert sum(losses[2]) / len(losses[2]) < sum(losses[1]) / len(losses[1])
    assert all(float(row["local_loss"]) > 0 for row in rows)  # masks present: the glocal loss, not global only
    assert load_prompt_checkpoint(pipeline.run / "prompts.safetensors").metadata["epoch"] == EPOCHS


def test_resumed_run_continues_from_epoch_two(pipeline: Pipeline) -> None:
    rows = read_log(pipeline.resumed)
    before = pipeline.log_before_resume
    assert rows[:len(before)] == before
    appended = rows[len(before):]
    epoch_two = [row for row in before if row["epoch"] == "2"]
    assert [row["epoch"] for row in appended] == ["2"] * len(epoch_two)
    # The same data order and optimiser state as the straight run, so the same epoch-2 losses.
    assert [float(row["loss"]) for row in appended] == pytest.approx([float(row["loss"]) for row in epoch_two],
                                                                     rel=1e-5)
    assert load_prompt_checkpoint(pipeline.resumed / "prompts.safetensors").metadata["epoch"] == EPOCHS


def test_evaluation_writes_every_report_file(pipeline: Pipeline) -> None:
    for name in ("results.json", "results.md", "cases.csv", "curves/brainmri_image.png", "curves/kvasir_pixel.png",
                 "examples/brainmri/best_1.png", "examples/kvasir/best_1.png"):
        assert (pipeline.evaluation / name).is_file(), name
    assert pipeline.results["method"] == "anomalyclip"
    assert pipeline.results["model"]["prompts"].endswith("prompts.safetensors")
    assert list(pipeline.results["datasets"]) == ["brainmri", "kvasir"]


def test_labelled_dataset_has_image_metrics_only(pipeline: Pipeline) -> None:
    brainmri = pipeline.results["datasets"]["brainmri"]
    assert brainmri["counts"] == {"images": 6, "normal": 3, "anomalous": 3, "with_masks": 0}
    for metric in IMAGE_METRICS:
        assert 0 <= brainmri["mean"][metric] <= 1, metric
    for metric in PIXEL_METRICS:
        assert brainmri["mean"][metric] == NOT_AVAILABLE, metric


def test_segmented_dataset_has_pixel_metrics_only(pipeline: Pipeline) -> None:
    kvasir = pipeline.results["datasets"]["kvasir"]
    assert kvasir["counts"] == {"images": 4, "normal": 0, "anomalous": 4, "with_masks": 4}
    for metric in PIXEL_METRICS:
        assert 0 <= kvasir["mean"][metric] <= 1, metric
    for metric in IMAGE_METRICS:
        assert kvasir["mean"][metric] == NOT_AVAILABLE, metric
    table = (pipeline.evaluation / "results.md").read_text()
    assert "| image AUROC | n/a | - |" in table and "| pixel AUROC | n/a | - |" in table
    assert set(kvasir["classes"]["kvasir"]["metrics"]) == set(METRICS)
