"""The bundle as MONAI's own tools see it: the model zoo's offline checks that can run here.

`verify_net_in_out` on `network_def` and on the exported `models/model.ts`, the TorchScript export with
its sha256 in `large_files.yml`, the inferer called MONAI's way (`inputs=`, `network=`), one version
everywhere, and the model card's sections. A tiny random CLIP keeps it fast; the exported file is this
test's own, so loading it with torch.jit.load is what a deployment of it would do.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from medclip_ad import __version__
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import prepare_dataset
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError
from medclip_ad.io.synthetic import make_synthetic_study
from medclip_ad.methods.anomalyclip.checkpoint import load_prompt_checkpoint
from medclip_ad.methods.anomalyclip.recipe import TrainingConfig
from medclip_ad.training.loop import LOG_FILE
from medclip_ad.training.runs import train_method
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.engines import SupervisedTrainer
from monai.bundle.scripts import run as bundle_run
from monai.bundle.scripts import verify_net_in_out

from conftest import REPO_ROOT
from mini_datasets import make_endo, make_kvasir

BUNDLE = REPO_ROOT / "bundles" / "anomalyclip_zeroshot_medical"
METADATA = BUNDLE / "configs" / "metadata.json"
INFERENCE = BUNDLE / "configs" / "inference.json"
TINY = {"clip_weights": "random:tiny", "method": "ensemble", "device": "cpu"}
MODEL_CARD_SECTIONS = ("Model Overview", "Data", "Performance", "MONAI Bundle Commands", "Training configuration",
                       "Limitations", "License", "References")

pytestmark = [pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning"),  # torch marks TorchScript deprecated
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """`python -m monai.bundle run export_torchscript` into a foreign bundle root, at the declared 518 px."""
    root = tmp_path_factory.mktemp("bundle_root")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("elsewhere"))
        bundle_run("export_torchscript", config_file=str(INFERENCE), meta_file=str(METADATA), bundle_root=str(root),
                   logging_file=False, **TINY)
    return root


def test_one_version_everywhere_and_the_zoo_files():
    metadata = json.loads(METADATA.read_text())
    assert metadata["version"] == __version__ == metadata["required_packages_version"]["medclip-ad"]
    assert __version__ in metadata["changelog"]
    assert f"`anomalyclip_zeroshot_medical` {__version__}" in (BUNDLE / "docs" / "README.md").read_text()
    assert "MVTec AD" in (BUNDLE / "docs" / "data_license.txt").read_text()
    headings = re.findall(r"^## (.+)$", (BUNDLE / "docs" / "README.md").read_text(), flags=re.MULTILINE)
    assert [section for section in MODEL_CARD_SECTIONS if section not in headings] == []


def test_network_def_matches_the_declared_data_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    verify_net_in_out("network_def", meta_file=str(METADATA), config_file=str(INFERENCE), bundle_root=str(tmp_path),
                      **TINY)


def test_the_exported_model_is_listed_with_its_sha256_and_passes_the_same_check(exported, tmp_path, monkeypatch):
    model = exported / "models" / "model.ts"
    listing = (exported / "large_files.yml").read_text()
    assert f'hash_val: "{hashlib.sha256(model.read_bytes()).hexdigest()}"' in listing and "models/model.ts" in listing
    monkeypatch.chdir(tmp_path)
    verify_net_in_out("network_def", meta_file=str(METADATA), config_file=str(INFERENCE), bundle_root=str(exported),
                      network_def=f"$torch.jit.load('{model}')", **TINY)


def test_the_exported_model_reproduces_the_network_and_carries_its_metadata(exported):
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({**TINY, "bundle_root": str(exported)})
    network = parser.get_parsed_content("network_def")
    extra = {"metadata.json": "", "provenance.json": ""}
    loaded = torch.jit.load(str(exported / "models" / "model.ts"), _extra_files=extra)
    images = torch.randn(3, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager, traced = network(images), loaded(images)
    assert eager.shape == (3, 1, 518, 518) and float(eager.min()) >= 0.0
    assert (traced - eager).abs().max().item() <= 1e-4
    assert json.loads(extra["metadata.json"])["version"] == __version__
    assert json.loads(extra["provenance.json"])["clip_weights"] == "random:tiny"


def test_the_inferer_takes_inputs_and_network_as_monai_calls_it(tmp_path):
    study = make_synthetic_study(tmp_path / "study", shape=(48, 48, 4))
    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    parser.update({**TINY, "image_size": 224, "bundle_root": str(tmp_path)})
    load, inferer, network = (parser.get_parsed_content(key) for key in ("preprocessing", "inferer", "network_def"))
    scan = load(study.nifti_path)
    monai_style, plain = inferer(inputs=scan, network=network), inferer(scan)
    assert monai_style["prediction"].score == pytest.approx(plain["prediction"].score, abs=1e-6)
    np.testing.assert_allclose(monai_style["prediction"].map, plain["prediction"].map, atol=1e-6)
    assert monai_style["prediction"].map.shape == scan.array.shape[:3]


TRAIN = BUNDLE / "configs" / "train.json"
TINY_TRAINING = {"clip_weights": "random:tiny", "device": "cpu", "image_size": 56, "batch_size": 4}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """The zoo's `dataset_dir`: a folder holding the training manifests (`prepare-data` output)."""
    root = tmp_path_factory.mktemp("training_data")
    prepare_dataset("kvasir", [make_kvasir(root / "Kvasir-SEG")]).save(root / "manifests" / "kvasir.json")
    prepare_dataset("endo", [make_endo(root / "endo")]).save(root / "manifests" / "endo.json")
    return root / "manifests"


def _train_parser(dataset_dir: Path, output_dir: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(TRAIN))
    parser.update({**TINY_TRAINING, "bundle_root": str(output_dir.parent), "dataset_dir": str(dataset_dir),
                   "output_dir": str(output_dir), **overrides})
    return parser


def test_train_config_has_every_property_the_zoo_requires(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workflow = ConfigWorkflow(config_file=str(TRAIN), meta_file=str(METADATA), workflow_type="train",
                              logging_file=False, **TINY_TRAINING, dataset_dir=str(dataset_dir),
                              output_dir=str(tmp_path / "run"), bundle_root=str(tmp_path))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert isinstance(workflow.trainer, SupervisedTrainer) and workflow.max_epochs == 15  # the published recipe


def test_one_epoch_through_the_supervised_trainer_is_the_cli_run_and_resumes_exactly(dataset_dir, tmp_path):
    """`train#trainer` (MONAI's SupervisedTrainer, with a StatsHandler) drives the package's own loop: its epoch
    checkpoint is `medclip-ad train`'s to the bit, and resuming it through the trainer matches a straight run."""
    parser = _train_parser(dataset_dir, tmp_path / "engine", epochs=1)
    trainer = parser.get_parsed_content("train#trainer")
    assert isinstance(trainer, SupervisedTrainer) and trainer.state.max_epochs == 1
    for expression in parser["run"]:
        parser.get_parsed_content(f"run#{parser['run'].index(expression)}")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 3  # 10 images in batches of 4
    assert set(trainer.state.output) == {"total", "global", "local"}

    manifests = [Manifest.load(path) for path in sorted(dataset_dir.glob("*.json"))]
    detector = DetectorConfig(clip_weights="random:tiny", device="cpu", image_size=56)
    recipe = TrainingConfig(epochs=2, batch_size=4)
    train_method("anomalyclip", detector, manifests, tmp_path / "cli", recipe, show_progress=False)
    by_engine, by_cli = (load_prompt_checkpoint(folder / "epoch_001.safetensors")
                         for folder in (tmp_path / "engine", tmp_path / "cli"))
    for name, value in by_cli.tensors.items():
        assert torch.equal(by_engine.tensors[name], value), name
    different = {key for key in by_cli.metadata if by_engine.metadata.get(key) != by_cli.metadata[key]}
    assert different == {"recipe", "epochs"}  # the planned epochs (1 and 2), nothing else
    assert {**by_engine.metadata["recipe"], "epochs": 2} == by_cli.metadata["recipe"]

    resumed = _train_parser(dataset_dir, tmp_path / "engine", epochs=2,
                            resume=str(tmp_path / "engine" / "epoch_001.safetensors"))
    resumed.get_parsed_content("run#0")
    assert resumed.get_parsed_content("train#trainer").state.epoch == 2
    straight, continued = (load_prompt_checkpoint(folder / "epoch_002.safetensors")
                           for folder in (tmp_path / "cli", tmp_path / "engine"))
    for name, value in straight.tensors.items():
        assert torch.equal(continued.tensors[name], value), name
    engine_log = (tmp_path / "engine" / LOG_FILE).read_text().splitlines()
    assert engine_log == (tmp_path / "cli" / LOG_FILE).read_text().splitlines()


def test_a_missing_dataset_dir_is_one_clear_line(tmp_path):
    parser = _train_parser(tmp_path / "absent", tmp_path / "run")
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content("train#dataset")
    cause = raised.value
    while cause is not None and not isinstance(cause, UserInputError):
        cause = cause.__cause__
    assert cause is not None and "dataset_dir" in str(cause) and "prepare-data" in str(cause)
