"""The MONAI bundle run the way MONAI users run it, from a working directory outside the bundle.

Configs go through `python -m monai.bundle` (and `torchrun -m monai.bundle`) as subprocesses and through
`monai.bundle.run` in-process, with a tiny random CLIP at 224 px on generated data: a small CT study (DICOM
series and NIfTI) and two PNGs for inference, two mini datasets for training and evaluation.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from medclip_ad import __version__
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.constants import IMAGE_SIZE
from medclip_ad.datasets import prepare_dataset
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation import RESULTS_FILE, published_anomalyclip
from medclip_ad.inference.case import CaseOptions
from medclip_ad.io.discovery import discover_cases
from medclip_ad.io.synthetic import make_synthetic_study
from medclip_ad.methods.adaclip.training import FINAL_CHECKPOINT as ADACLIP_FINAL_CHECKPOINT
from medclip_ad.methods.adaclip.training import AdaCLIPTrainingConfig
from medclip_ad.methods.anomalyclip.checkpoint import load_prompt_checkpoint
from medclip_ad.methods.anomalyclip.training import FINAL_CHECKPOINT, TrainingConfig
from medclip_ad.methods.checkpoint import load_method_checkpoint
from medclip_ad.methods.rwda.training import FINAL_CHECKPOINT as RWDA_FINAL_CHECKPOINT
from medclip_ad.methods.rwda.training import RandomWordTrainingConfig
from medclip_ad.training.loop import LOG_FILE
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run
from PIL import Image

from conftest import REPO_ROOT, SHARED
from mini_datasets import make_endo, make_kvasir

BUNDLE = REPO_ROOT / "bundles" / "anomalyclip_zeroshot_medical"
CONFIGS = BUNDLE / "configs"
SCHEMA_NAME = "meta_schema_20240725.json"
VENDORED_SCHEMA = BUNDLE / "docs" / SCHEMA_NAME
TINY = {"clip_weights": "random:tiny", "image_size": 224, "device": "cpu"}
INPUTS = ["study/dicom", "study/synthetic_ct.nii.gz", "photos"]
CASES = {"dicom": "volume", "synthetic_ct": "volume", "photo_grey": "image", "photo_rgb": "image"}
MANIFESTS = ["data/kvasir.json", "data/endo.json"]
TRAINING = {"epochs": 2, "batch_size": 4}
TIMEOUT_S = 600

# MONAI warns on every config it parses that configs run code; these are the bundle's own.
pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")


def config_files(*names: str) -> str:
    """--config_file as MONAI's CLI takes it: one path, or a Python list literal merged in order."""
    paths = [str(CONFIGS / f"{name}.json") for name in names]
    return paths[0] if len(paths) == 1 else repr(paths)


def bundle_cli(cwd: Path, *names: str, torchrun: bool = False, **overrides) -> str:
    """`python -m monai.bundle run` (or the same under `torchrun --nproc_per_node=2`); returns its output."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else []
    command = [sys.executable, *launcher, "-m", "monai.bundle", "run", "--config_file", config_files(*names)]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def bundle_api(cwd: Path, *names: str, **overrides) -> None:
    """`monai.bundle.run` in this process; the bundle's logging.conf is left out so pytest keeps its logging."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        bundle_run(config_file=[str(CONFIGS / f"{name}.json") for name in names], logging_file=False, **overrides)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory outside the bundle with a study, two PNGs and two dataset manifests."""
    root = tmp_path_factory.mktemp("workspace")
    make_synthetic_study(root / "study", shape=(64, 64, 6))
    (root / "photos").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8)).save(root / "photos" / "photo_grey.png")
    Image.fromarray(rng.integers(0, 256, (48, 32, 3), dtype=np.uint8)).save(root / "photos" / "photo_rgb.png")
    with pytest.warns(UserWarning):  # the mini datasets are far smaller than the published ones
        prepare_dataset("kvasir", [make_kvasir(root / "data" / "Kvasir-SEG")]).save(root / MANIFESTS[0])
        prepare_dataset("endo", [make_endo(root / "data" / "endo")]).save(root / MANIFESTS[1])
    return root


@pytest.fixture(scope="module")
def single_inference(workspace) -> Path:
    """inference.json through the CLI exactly as the README writes it, with training-free prompts."""
    bundle_cli(workspace, "inference", input_path=INPUTS, output_dir="single", method="ensemble", **TINY)
    return workspace / "single"


@pytest.fixture(scope="module")
def single_training(workspace) -> Path:
    """train.json through `monai.bundle.run`: two epochs on kvasir + endo (10 images, every one with ground truth)."""
    bundle_api(workspace, "train", manifests=MANIFESTS, output_dir="trained", **TINY, **TRAINING)
    return workspace / "trained"


def test_metadata_verifies_offline_against_the_vendored_schema(workspace):
    digest = hashlib.md5(VENDORED_SCHEMA.read_bytes()).hexdigest()
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file",
                             str(CONFIGS / "metadata.json"), "--filepath", str(VENDORED_SCHEMA), "--hash_val", digest],
                            cwd=workspace, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0 and "verified with no error" in result.stderr + result.stdout, result.stderr
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["schema"].endswith(SCHEMA_NAME)
    assert metadata["required_packages_version"]["medclip-ad"] == __version__
    published = metadata["eval_metrics"]["published_anomalyclip"]["datasets"]
    assert {dataset: {k: round(v / 100, 6) for k, v in metrics.items()} for dataset, metrics in published.items()} \
        == published_anomalyclip().datasets
    if (SHARED / "schemas" / SCHEMA_NAME).is_file():
        assert VENDORED_SCHEMA.read_bytes() == (SHARED / "schemas" / SCHEMA_NAME).read_bytes()


def test_config_defaults_are_the_package_defaults():
    detector, options, training = DetectorConfig(), CaseOptions(), TrainingConfig()
    expected = {"clip_weights": detector.clip_weights, "method": detector.method, "device": detector.device,
                "image_size": detector.image_size, "layers": list(detector.layers),
                "batch_size": detector.batch_size, "precision": detector.precision}
    for name in ("inference", "evaluate"):
        config = ConfigParser.load_config_file(CONFIGS / f"{name}.json")
        assert {key: config[key] for key in expected} == expected, name
    inference = ConfigParser.load_config_file(CONFIGS / "inference.json")
    assert (inference["aggregation"], inference["top_k"], inference["overlays"]) == \
        (options.aggregation, options.top_k, options.overlay_count)
    assert inference["dicom_out"] == options.dicom_out
    evaluate = ConfigParser.load_config_file(CONFIGS / "evaluate.json")
    volume_keys = ("axis", "window", "aggregation", "top_k", "volume_index")
    assert {key: evaluate[key] for key in volume_keys} == {key: getattr(options, key) for key in volume_keys}
    train = ConfigParser.load_config_file(CONFIGS / "train.json")
    recipe = ("epochs", "batch_size", "learning_rate", "seed", "image_labels_only", "workers")
    assert {key: train[key] for key in recipe} == {key: getattr(training, key) for key in recipe}
    assert (train["image_size"], train["layers"]) == (detector.image_size, list(detector.layers))


def test_inference_writes_the_contract_outputs_as_infer_does(single_inference, workspace):
    assert sorted(path.name for path in single_inference.iterdir()) == sorted(CASES)
    for case, kind in CASES.items():
        document = json.loads((single_inference / case / "scores.json").read_text())
        assert document["kind"] == kind and document["model"]["random_weights"]
        assert "RANDOM WEIGHTS" in document["warning"]
        if kind == "volume":
            assert nib.load(single_inference / case / "anomaly_map.nii.gz").shape == (64, 64, 6)
            assert len(document["slice_scores"]) == 6 and any((single_inference / case / "overlays").iterdir())
        else:
            assert (single_inference / case / "overlay.png").is_file()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workspace)
        assert main(["infer", *INPUTS, "--out", "cli", "--method", "ensemble", "--clip-weights", "random:tiny",
                     "--image-size", "224", "--device", "cpu"]) == 0
    assert_same_cases(single_inference, workspace / "cli", CASES)


def test_reading_and_scoring_run_without_the_writing_step(single_inference, workspace):
    """What a host with its own outputs (MONAI Deploy) keeps: preprocessing and the inferer, no postprocessing."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"method": "ensemble", "output_dir": str(workspace / "never"), **TINY})
    load, score = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer")
    scored = score(load(workspace / "photos" / "photo_grey.png"))
    scan, prediction = scored["scan"], scored["prediction"]
    written = json.loads((single_inference / "photo_grey" / "scores.json").read_text())
    assert prediction.score == pytest.approx(written["score"], abs=1e-5)
    np.testing.assert_allclose(prediction.map, np.load(single_inference / "photo_grey" / "anomaly_map.npy"), atol=1e-5)
    assert scan.name == "photo_grey" and not (workspace / "never").exists()


def test_without_a_prompt_checkpoint_inference_says_how_to_get_one(workspace, tmp_path):
    with pytest.raises(RuntimeError) as raised:
        bundle_api(workspace, "inference", bundle_root=str(tmp_path), input_path=INPUTS,
                   output_dir=str(tmp_path / "out"), **TINY)
    cause = raised.value
    while cause is not None and not isinstance(cause, UserInputError):
        cause = cause.__cause__
    assert cause is not None and "--method ensemble" in str(cause) and "models/README.md" in str(cause)
    assert not (tmp_path / "out").exists()


def test_train_writes_a_checkpoint_that_evaluate_reads(single_training, workspace):
    checkpoint = load_prompt_checkpoint(single_training / FINAL_CHECKPOINT)
    assert checkpoint.metadata["epoch"] == 2 and checkpoint.metadata["training_data"] == {"kvasir": 4, "endo": 6}
    bundle_api(workspace, "evaluate", manifests=[MANIFESTS[1]], prompts=f"trained/{FINAL_CHECKPOINT}",
               output_dir="evaluation", **TINY)
    results = json.loads((workspace / "evaluation" / RESULTS_FILE).read_text())
    # provenance names the checkpoint by its resolved path, so the results stay valid from any folder
    assert results["model"]["prompts"] == str((workspace / "trained" / FINAL_CHECKPOINT).resolve())
    assert results["method"] == "anomalyclip"
    assert set(results["datasets"]) == {"endo"} and results["datasets"]["endo"]["counts"]["images"] == 6


def test_evaluate_config_scores_volume_manifests_with_its_volume_options(single_inference, workspace):
    data = workspace / "volume_set"
    (data / "abnormal").mkdir(parents=True)
    (data / "masks").mkdir()
    shutil.copy(workspace / "study" / "synthetic_ct.nii.gz", data / "abnormal" / "ct.nii.gz")
    shutil.copy(workspace / "study" / "lesion_mask.nii.gz", data / "masks" / "ct_seg.nii.gz")
    prepare_dataset("volumes", [data]).save(workspace / "volumes.json")
    bundle_api(workspace, "evaluate", manifests=["volumes.json"], method="ensemble", aggregation="mean",
               output_dir="volume_evaluation", **TINY)
    results = json.loads((workspace / "volume_evaluation" / RESULTS_FILE).read_text())
    dataset = results["datasets"]["volumes"]
    assert dataset["entries"] == "volumes" and 0.0 <= dataset["mean"]["pixel_auroc"] <= 1.0
    slice_scores = json.loads((single_inference / "synthetic_ct" / "scores.json").read_text())["slice_scores"]
    with open(workspace / "volume_evaluation" / "cases.csv", newline="") as handle:
        [row] = csv.DictReader(handle)
    assert float(row["score"]) == pytest.approx(float(np.mean(slice_scores)), abs=1e-5)  # the mean, as asked


@pytest.mark.slow
def test_torchrun_data_parallel_training_equals_the_single_process_run(single_training, workspace):
    bundle_cli(workspace, "train", "multi_gpu_train", torchrun=True, manifests=MANIFESTS, output_dir="trained_ddp",
               **TINY, **TRAINING)
    single = load_prompt_checkpoint(single_training / FINAL_CHECKPOINT)
    parallel = load_prompt_checkpoint(workspace / "trained_ddp" / FINAL_CHECKPOINT)
    assert set(single.tensors) == set(parallel.tensors)
    # Deep prompts enter the text blocks rounded through fp16, as in the reference, so their gradient (and,
    # through the text encoder, the context's) is rounded to fp16 per process before the sum; Adam can turn
    # that rounding in a near-zero gradient into a step of either sign (the learning rate, 1e-3) for a few
    # values. 98 % agree to 1 % of a step; a lost or mis-weighted rank would move nearly all of them.
    differences = torch.cat([(parallel.tensors[name] - value).abs().reshape(-1) for name, value in
                             single.tensors.items()])
    assert float((differences > 1e-5).float().mean()) < 0.02 and float(differences.max()) < 3e-3
    assert {k: v for k, v in parallel.metadata.items() if k != "epoch_losses"} == \
        {k: v for k, v in single.metadata.items() if k != "epoch_losses"}
    assert parallel.metadata["epoch_losses"] == pytest.approx(single.metadata["epoch_losses"], rel=1e-4)
    single_log, parallel_log = ((folder / LOG_FILE).read_text().splitlines() for folder in
                                (single_training, workspace / "trained_ddp"))
    assert len(parallel_log) == len(single_log)  # rank 0 alone wrote the log: one row per global step
    losses = [[float(row.split(",")[2]) for row in log[1:]] for log in (single_log, parallel_log)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


@pytest.mark.slow
def test_torchrun_sharded_inference_resumes_and_writes_each_case_once(single_inference, workspace):
    out = workspace / "sharded"
    out.mkdir()
    order = [source.name for source in discover_cases([workspace / path for path in INPUTS])[0]]
    finished = order[0]  # rank 0's first case, already written before the run
    shutil.copytree(single_inference / finished, out / finished)
    before = (out / finished / "scores.json").stat().st_mtime_ns
    output = bundle_cli(workspace, "inference", "multi_gpu_inference", torchrun=True, input_path=INPUTS,
                        output_dir="sharded", method="ensemble", **TINY)
    assert sorted(path.name for path in out.iterdir()) == sorted(CASES)  # no duplicates, no staging leftovers
    assert (out / finished / "scores.json").stat().st_mtime_ns == before
    rank_zero = order[0::2]
    assert f"resuming: 1 of {len(rank_zero)} case(s) already in sharded" in output
    for case in order:
        assert output.count(f"-> sharded/{case}") == (case in rank_zero[1:])  # ranks > 0 log warnings only
    assert_same_cases(single_inference, out, CASES)


def test_adaclip_and_rwda_train_through_their_configs_and_run_through_inference(workspace):
    """Each method's training config writes its checkpoint under models/; inference.json then runs it."""
    bundle_api(workspace, "train_adaclip", bundle_root="adaclip_bundle", manifests=MANIFESTS, epochs=1,
               batch_size=4, **TINY)
    adaclip = workspace / "adaclip_bundle" / "models" / "adaclip" / ADACLIP_FINAL_CHECKPOINT
    metadata = load_method_checkpoint(adaclip, "adaclip").metadata
    assert metadata["training_data"] == {"kvasir": 4, "endo": 6} and metadata["feature_layers"] == [6, 12, 18, 24]
    assert metadata["recipe"]["batch_size"] == 4 and metadata["recipe"]["weight_decay"] == 0.01
    bundle_api(workspace, "train_rwda", bundle_root="rwda_bundle", prompts_per_class=16, epochs=2,
               clip_weights="random:tiny", device="cpu")
    rwda = workspace / "rwda_bundle" / "models" / "rwda" / RWDA_FINAL_CHECKPOINT
    assert load_method_checkpoint(rwda, "rwda").metadata["training_data"] == {"random_word_prompts": 32}
    for method, checkpoint in (("adaclip", adaclip), ("rwda", rwda)):
        bundle_api(workspace, "inference", input_path=["photos"], output_dir=f"by_{method}", method=method,
                   prompts=str(checkpoint), **TINY)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(workspace)
            assert main(["infer", "photos", "--out", f"cli_{method}", "--method", method, "--prompts", str(checkpoint),
                         "--clip-weights", "random:tiny", "--image-size", "224", "--device", "cpu"]) == 0
        photos = {case: kind for case, kind in CASES.items() if kind == "image"}
        assert_same_cases(workspace / f"cli_{method}", workspace / f"by_{method}", photos)
        document = json.loads((workspace / f"by_{method}" / "photo_grey" / "scores.json").read_text())
        assert document["model"]["method"] == method


def test_method_training_configs_default_to_the_published_recipes():
    adaclip, rwda = AdaCLIPTrainingConfig(), RandomWordTrainingConfig()
    config = ConfigParser.load_config_file(CONFIGS / "train_adaclip.json")
    recipe = ("epochs", "batch_size", "learning_rate", "weight_decay", "seed", "workers", "object_word",
              "image_labels_only")
    assert {key: config[key] for key in recipe} == {key: getattr(adaclip, key) for key in recipe}
    assert config["feature_layers"] == list(adaclip.feature_layers) and config["image_size"] == IMAGE_SIZE
    config = ConfigParser.load_config_file(CONFIGS / "train_rwda.json")
    assert {key: config[key] for key in ("epochs", "batch_size", "learning_rate", "seed")} == \
        {key: getattr(rwda, key) for key in ("epochs", "batch_size", "learning_rate", "seed")}
    assert config["prompts_per_class"] == rwda.prompts.prompts_per_class


def assert_same_cases(expected: Path, actual: Path, cases: dict[str, str]) -> None:
    """Same scores.json documents (floats to 1e-5) and the same maps, case by case."""
    for case, kind in cases.items():
        documents = [json.loads((folder / case / "scores.json").read_text()) for folder in (expected, actual)]
        assert documents[1]["score"] == pytest.approx(documents[0]["score"], abs=1e-5)
        assert documents[1].get("slice_scores", []) == pytest.approx(documents[0].get("slice_scores", []), abs=1e-5)
        ignored = {"score", "slice_scores"}
        assert {k: v for k, v in documents[1].items() if k not in ignored} == \
            {k: v for k, v in documents[0].items() if k not in ignored}
        maps = [_read_map(folder / case, kind) for folder in (expected, actual)]
        np.testing.assert_allclose(maps[1], maps[0], atol=1e-5)


def _read_map(folder: Path, kind: str) -> np.ndarray:
    if kind == "volume":
        return np.asarray(nib.load(folder / "anomaly_map.nii.gz").dataobj)
    return np.load(folder / "anomaly_map.npy")
