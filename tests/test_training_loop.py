"""The one training loop: torchrun equals one process for every trained method, used run folders,
--init from another checkpoint, and --val-manifest keeping the best epoch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.datasets import prepare_dataset
from medclip_ad.methods.checkpoint import read_method_checkpoint
from medclip_ad.methods.registry import TRAINED_METHOD_NAMES, get_trainer
from medclip_ad.training.loop import BEST_CHECKPOINT, LOG_FILE

from conftest import PARITY, REPO_ROOT
from mini_datasets import make_endo, make_kvasir

BACKBONE = ["--clip-weights", "random:tiny", "--image-size", "224", "--device", "cpu"]
SMALL_BACKBONE = ["--clip-weights", "random:tiny", "--image-size", "112", "--device", "cpu"]  # 8 x 8 patches
TIMEOUT_S = 600
# Every method's recipe for the comparison: two epochs, batches that do not split evenly over two ranks
# (adaclip's last batch leaves rank 1 nothing to do), so the share weighting is what is being tested.
RUNS = {"anomalyclip": ["--manifest", "KVASIR", "ENDO", "--epochs", "2", "--batch-size", "4"],
        "adaclip": ["--manifest", "SMALL_ENDO", "--epochs", "2", "--batch-size", "2"],
        "rwda": ["--prompts-per-class", "12", "--epochs", "2", "--batch-size", "10"]}

pytestmark = pytest.mark.filterwarnings("ignore:.*expected .* images:UserWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("data")
    paths = {}
    for name, manifest in (("KVASIR", prepare_dataset("kvasir", [make_kvasir(root / "kvasir")])),
                           ("ENDO", prepare_dataset("endo", [make_endo(root / "endo")])),
                           ("SMALL_ENDO", prepare_dataset("endo", [make_endo(root / "small", normal=1, anomalous=2)]))):
        manifest.save(root / f"{name.lower()}.json")
        paths[name] = str(root / f"{name.lower()}.json")
    return paths


def command(method: str, out: Path, data: dict[str, str]) -> list[str]:
    return ["train", "--method", method, "--out", str(out), *(data.get(arg, arg) for arg in RUNS[method]),
            *SMALL_BACKBONE]


def test_every_trained_method_is_compared():
    assert set(RUNS) == set(TRAINED_METHOD_NAMES)


@pytest.mark.slow
def test_torchrun_training_equals_single_process_training_for_every_method(data, tmp_path):
    for method in RUNS:
        assert main(command(method, tmp_path / "single" / method, data)) == 0
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([command(method, tmp_path / "parallel" / method, data) for method in RUNS]))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(REPO_ROOT / "tests" / "distributed_training.py"), str(runs)],
                            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for method in RUNS:
        single_dir, parallel_dir = tmp_path / "single" / method, tmp_path / "parallel" / method
        assert sorted(p.name for p in parallel_dir.iterdir()) == sorted(p.name for p in single_dir.iterdir())
        final = get_trainer(method).final_checkpoint
        single, parallel = (read_method_checkpoint(folder / final) for folder in (single_dir, parallel_dir))
        assert single.tensors.keys() == parallel.tensors.keys() and single.tensors
        # Adam turns rounding noise in a near-zero gradient into a full step of either sign, and AdaCLIP's
        # fp16 hybrid prompts round differently in a half-size batch, so a few values may differ by up to a
        # step or two (the learning rate); 98 % of them agree to 1 % of one step (a lost or mis-weighted
        # rank's gradient would move nearly all of them by about a step).
        step = single.metadata["recipe"]["learning_rate"]
        differences = torch.cat([(parallel.tensors[name] - value).abs().reshape(-1)
                                 for name, value in single.tensors.items()])
        assert float((differences > 0.01 * step).float().mean()) < 0.02, method
        for name, value in single.optimizer_state.items():  # the moments, to 1 % of their largest value
            difference = float((parallel.optimizer_state[name] - value).abs().max())
            assert difference <= 1e-2 * float(value.abs().max()) + 1e-12, (method, name)
        volatile = ("epoch_losses", "train_accuracy")
        assert {k: v for k, v in parallel.metadata.items() if k not in volatile} == \
            {k: v for k, v in single.metadata.items() if k not in volatile}
        assert parallel.metadata["epoch_losses"] == pytest.approx(single.metadata["epoch_losses"], rel=1e-3)
        single_log, parallel_log = ((d / LOG_FILE).read_text().splitlines() for d in (single_dir, parallel_dir))
        assert len(parallel_log) == len(single_log) > 2  # rank 0 alone logs: one row per global step
        losses = [[float(row.split(",")[2]) for row in log[1:]] for log in (single_log, parallel_log)]
        assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-5)  # the same first batch, the same weights
        assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_a_used_run_folder_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    rwda = ["train", "--method", "rwda", "--out", str(out), "--prompts-per-class", "4", *BACKBONE]
    assert main([*rwda, "--epochs", "2"]) == 0
    before = (out / "epoch_002.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*rwda, "--epochs", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{out}: already holds a training run" in error[0] and "--overwrite" in error[0]
    assert (out / "epoch_002.safetensors").read_bytes() == before
    assert main([*rwda, "--epochs", "1", "--overwrite"]) == 0
    assert sorted(path.name for path in out.glob("epoch_*")) == ["epoch_001.safetensors"]
    with open(out / LOG_FILE) as handle:
        assert {line.split(",")[0] for line in handle.read().splitlines()[1:]} == {"1"}


def test_init_starts_from_reference_prompts(data, tmp_path):
    """With a zero learning rate the run keeps exactly the reference prompts it started from."""
    reference = torch.load(PARITY / "tiny_prompts_reference_format.pth", weights_only=True)["prompt_learner"]
    out = tmp_path / "finetuned"
    assert main(["train", "--manifest", data["KVASIR"], data["ENDO"], "--out", str(out), "--epochs", "1",
                 "--batch-size", "5", "--lr", "0", "--init", str(PARITY / "tiny_prompts_reference_format.pth"),
                 "--clip-weights", str(PARITY / "tiny_clip_openai_format.pt"), "--image-size", "224",
                 "--device", "cpu"]) == 0
    prompts = read_method_checkpoint(out / "prompts.safetensors").tensors
    assert torch.equal(prompts["ctx_normal"], reference["ctx_pos"].reshape(prompts["ctx_normal"].shape).float())
    assert torch.equal(prompts["deep_prompts.7"], reference["compound_prompts_text.7"].float())


def test_val_manifest_keeps_the_best_epoch(data, tmp_path, capsys):
    out = tmp_path / "validated"
    assert main(["train", "--method", "adaclip", "--manifest", data["SMALL_ENDO"], "--val-manifest", data["ENDO"],
                 "--out", str(out), "--epochs", "3", "--batch-size", "3", "--lr", "0.05", *BACKBONE]) == 0
    scores = [float(value) for value in
              re.findall(r"validation pixel_f1_max ([0-9.]+) ->", capsys.readouterr().err)]
    assert len(scores) == 3
    best = scores.index(max(scores)) + 1
    assert (out / BEST_CHECKPOINT).read_bytes() == (out / f"epoch_{best:03d}.safetensors").read_bytes()
