"""`medclip-ad evaluate` on tiny generated datasets in published layouts, with the tiny random backbone.

Every metric in the report is checked against a direct call of `medclip_ad.evaluation.metrics` on scores and maps
the test computes itself with the predictor, so the evaluation adds bookkeeping, never arithmetic.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import Manifest, ManifestEntry, prepare_dataset
from medclip_ad.datasets.samples import SampleDataset, manifest_samples
from medclip_ad.errors import UserInputError
from medclip_ad.evaluation import (
    IMAGE_METRICS,
    METRICS,
    NOT_AVAILABLE,
    PIXEL_METRICS,
    check_evaluation_inputs,
    evaluate,
    metrics,
)
from medclip_ad.inference.predictor import AnomalyPredictor
from PIL import Image

# The generated sets are far smaller than the published ones.
pytestmark = pytest.mark.filterwarnings("ignore::medclip_ad.datasets.notices.DatasetWarning")

IMAGE_SIZE = 224
BATCH_SIZE = 8  # at least every generated dataset's size: the test recomputes each in one batch, as evaluate does
DETECTOR_ARGS = ("--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", str(IMAGE_SIZE),
                 "--device", "cpu", "--batch-size", str(BATCH_SIZE))


def write_image(path: Path, seed: int, shape: tuple[int, ...] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, index: int, shape: tuple[int, int] = (40, 48)) -> Path:
    """A block whose place differs per image, so maps and masks overlap differently."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[4 + 6 * index:18 + 6 * index, 8 + 4 * index:30] = 255
    Image.fromarray(mask).save(path)
    return path


def make_brainmri(root: Path) -> Path:
    """The Kaggle layout: yes/ tumour images, no/ normal ones; labels only, no masks."""
    for index in range(3):
        write_image(root / "yes" / f"Y{index}.jpg", seed=index, shape=(40, 48, 3))
        write_image(root / "no" / f"N{index}.jpg", seed=10 + index, shape=(36, 36, 3))
    return root


def make_kvasir(root: Path) -> Path:
    """Kvasir-SEG: every image a polyp, masks of the same names."""
    for index in range(3):
        write_image(root / "images" / f"cju{index}.jpg", seed=20 + index, shape=(40, 48, 3))
        write_mask(root / "masks" / f"cju{index}.jpg", index)
    return root


def make_two_classes(root: Path) -> Manifest:
    """Class `a` (2 normal + 2 with masks) and class `b` (1 + 1): unequal sizes, so a weighted mean differs."""
    entries = []
    for cls_name, normal, anomalous in (("a", 2, 2), ("b", 1, 1)):
        for index in range(normal + anomalous):
            image = write_image(root / cls_name / f"{index}.png", seed=30 + index + 10 * len(entries))
            mask = write_mask(root / cls_name / f"{index}_mask.png", index) if index >= normal else None
            entries.append(ManifestEntry(img_path=image.relative_to(root).as_posix(),
                                         mask_path=mask.relative_to(root).as_posix() if mask else "",
                                         cls_name=cls_name, specie_name="lesion" if mask else "good",
                                         anomaly=int(mask is not None)))
    return Manifest.from_entries(root, entries, dataset="mixed")


@dataclass
class Evaluated:
    results: dict
    stdout: str
    out: Path
    manifests: dict[str, Manifest]


@pytest.fixture(scope="module")
def predictor(tiny_backbone) -> AnomalyPredictor:
    config = DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=IMAGE_SIZE, device="cpu",
                            batch_size=BATCH_SIZE)
    return AnomalyPredictor(config, backbone=tiny_backbone)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three datasets as manifest files, the way users pass them."""
    root = tmp_path_factory.mktemp("data")
    paths = {"brainmri": root / "brainmri.json", "kvasir": root / "kvasir.json", "mixed": root / "mixed.json"}
    prepare_dataset("brainmri", [make_brainmri(root / "brain_tumor")]).save(paths["brainmri"])
    prepare_dataset("kvasir", [make_kvasir(root / "Kvasir-SEG")]).save(paths["kvasir"])
    make_two_classes(root / "mixed").save(paths["mixed"])
    return paths


@pytest.fixture(scope="module")
def evaluated(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """One `medclip-ad evaluate` run over the three datasets, as a user would start it."""
    out = tmp_path_factory.mktemp("evaluation")
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(["evaluate", "--manifest", *map(str, data.values()), "--out", str(out), *DETECTOR_ARGS]) == 0
    manifests = {name: Manifest.load(path) for name, path in data.items()}
    return Evaluated(json.loads((out / "results.json").read_text()), stdout.getvalue(), out, manifests)


def direct_metrics(predictor: AnomalyPredictor, manifest: Manifest) -> dict[str, dict[str, float | None]]:
    """Per class, every metric computed here from the predictor's own outputs, independent of evaluate."""
    dataset = SampleDataset(manifest_samples([manifest]), IMAGE_SIZE)
    items = [dataset[index] for index in range(len(dataset))]
    scores, maps = predictor.predict_tensor(torch.stack([item["image"] for item in items]))
    scores, maps = scores.numpy(), maps.numpy()
    labels = np.array([int(item["label"]) for item in items])
    known = np.array([bool(item["has_mask"]) or int(item["label"]) == 0 for item in items])
    masks = np.stack([item["mask"].numpy() for item in items])
    classes = np.array([entry.cls_name for entry in manifest.entries()])
    expected = {}
    for cls_name in manifest.classes():
        chosen = classes == cls_name
        pixels = chosen & known
        class_masks, class_maps = masks[pixels], maps[pixels]
        has_pixels = any(item["has_mask"] for item in items)
        expected[cls_name] = {
            "image_auroc": metrics.image_auroc(labels[chosen], scores[chosen]),
            "image_ap": metrics.image_ap(labels[chosen], scores[chosen]),
            "image_f1_max": metrics.f1_max(labels[chosen], scores[chosen]),
            "pixel_auroc": metrics.pixel_auroc(class_masks, class_maps) if has_pixels else None,
            "aupro": metrics.aupro(class_masks, class_maps, "reference") if has_pixels else None,
            "aupro_standard": metrics.aupro(class_masks, class_maps, "standard") if has_pixels else None,
            "pixel_ap": metrics.pixel_ap(class_masks, class_maps) if has_pixels else None,
            "pixel_f1_max": metrics.pixel_f1_max(class_masks, class_maps) if has_pixels else None,
        }
    return expected


def as_written(value: float | None) -> float | str:
    return NOT_AVAILABLE if value is None else value


def test_report_files_exist(evaluated: Evaluated) -> None:
    out = evaluated.out
    for name in ("results.json", "results.md", "cases.csv", "curves/brainmri_image.png", "curves/kvasir_pixel.png",
                 "curves/mixed_image.png", "curves/mixed_pixel.png", "examples/brainmri/best_1.png",
                 "examples/brainmri/worst_1.png", "examples/kvasir/best_1.png", "examples/kvasir/worst_1.png"):
        assert (out / name).is_file(), name
    assert not (out / "curves" / "kvasir_image.png").exists()  # no image metric is defined there
    assert not (out / "curves" / "brainmri_pixel.png").exists()
    assert not [path for path in out.rglob(".*")], "temporary files left behind"
    results = evaluated.results
    assert results["name"] == results["method"] == "ensemble"
    assert "RANDOM WEIGHTS" in results["warning"] and results["model"]["random_weights"] is True
    assert results["timing"]["images"] == 15 and results["timing"]["images_per_second"] > 0
    with open(out / "cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["dataset"] for row in rows] == ["brainmri"] * 6 + ["kvasir"] * 3 + ["mixed"] * 6
    assert {row["image"] for row in rows if row["dataset"] == "kvasir"} == {f"images/cju{i}.jpg" for i in range(3)}
    example = results["datasets"]["kvasir"]["examples"]["best"][0]
    assert (out / example["file"]).is_file() and example["image"].startswith("images/cju")


def test_labelled_set_has_image_metrics_only(evaluated: Evaluated, predictor: AnomalyPredictor) -> None:
    expected = direct_metrics(predictor, evaluated.manifests["brainmri"])["brainmri"]
    written = evaluated.results["datasets"]["brainmri"]
    for metric in IMAGE_METRICS:
        assert expected[metric] is not None
    for metric in PIXEL_METRICS:
        assert written["mean"][metric] == NOT_AVAILABLE
    assert written["classes"]["brainmri"]["metrics"] == {metric: as_written(expected[metric]) for metric in METRICS}
    assert written["mean"] == written["classes"]["brainmri"]["metrics"]
    assert written["counts"] == {"images": 6, "normal": 3, "anomalous": 3, "with_masks": 0}


def test_all_anomalous_set_has_pixel_metrics_only(evaluated: Evaluated, predictor: AnomalyPredictor) -> None:
    expected = direct_metrics(predictor, evaluated.manifests["kvasir"])["kvasir"]
    written = evaluated.results["datasets"]["kvasir"]
    for metric in PIXEL_METRICS:
        assert expected[metric] is not None
    for metric in IMAGE_METRICS:
        assert written["mean"][metric] == NOT_AVAILABLE
    assert written["classes"]["kvasir"]["metrics"] == {metric: as_written(expected[metric]) for metric in METRICS}


def test_mean_over_classes_is_unweighted(evaluated: Evaluated, predictor: AnomalyPredictor) -> None:
    expected = direct_metrics(predictor, evaluated.manifests["mixed"])
    written = evaluated.results["datasets"]["mixed"]
    assert list(written["classes"]) == ["a", "b"]
    for cls_name in ("a", "b"):
        assert written["classes"][cls_name]["metrics"] == {metric: expected[cls_name][metric] for metric in METRICS}
    for metric in METRICS:
        assert written["mean"][metric] == pytest.approx((expected["a"][metric] + expected["b"][metric]) / 2)
    assert written["classes"]["a"]["counts"]["images"] == 4 and written["classes"]["b"]["counts"]["images"] == 2


def test_markdown_puts_published_numbers_beside_ours(evaluated: Evaluated) -> None:
    text = (evaluated.out / "results.md").read_text()
    brainmri = evaluated.results["datasets"]["brainmri"]["mean"]
    kvasir = evaluated.results["datasets"]["kvasir"]["mean"]
    assert f"| image AUROC | {100 * brainmri['image_auroc']:.1f} | 90.3 |" in text
    assert f"| image AP | {100 * brainmri['image_ap']:.1f} | 92.2 |" in text
    assert f"| pixel AUROC | {100 * kvasir['pixel_auroc']:.1f} | 78.9 |" in text
    assert f"| AUPRO | {100 * kvasir['aupro']:.1f} | 45.6 |" in text
    assert "| pixel AUROC | n/a | - |" in text  # brainmri: undefined here, not published
    assert "| class | images |" in text  # the two-class set gets a per-class table
    assert "RANDOM WEIGHTS" in text


def test_existing_report_is_not_replaced(evaluated: Evaluated, predictor: AnomalyPredictor) -> None:
    with pytest.raises(UserInputError, match=r"results\.json: already exists \(pass --overwrite"):
        evaluate(predictor, list(evaluated.manifests.values()), evaluated.out, show_progress=False)


def test_volume_entries_may_be_series_folders_but_must_exist(tmp_path: Path) -> None:
    (tmp_path / "series").mkdir()
    entries = [ManifestEntry(img_path=path, mask_path="", cls_name="ct", specie_name="good", anomaly=0, kind="volume")
               for path in ("series", "ct.nii.gz")]
    with pytest.raises(UserInputError, match=r"ct\.nii\.gz: listed in the ct manifest but not found"):
        check_evaluation_inputs([Manifest.from_entries(tmp_path, entries, dataset="ct")], tmp_path / "out", False)
    check_evaluation_inputs([Manifest.from_entries(tmp_path, entries[:1], dataset="ct")], tmp_path / "out", False)


def test_cli_prints_summary_table(evaluated: Evaluated) -> None:
    lines = evaluated.stdout.splitlines()
    assert lines[0].split() == ["dataset", "images", "img", "AUROC", "img", "AP", "px", "AUROC", "AUPRO"]
    brainmri, kvasir = lines[1].split(), lines[2].split()
    assert brainmri[:2] == ["brainmri", "6"] and brainmri[-2:] == [NOT_AVAILABLE, NOT_AVAILABLE]
    assert kvasir[:4] == ["kvasir", "3", NOT_AVAILABLE, NOT_AVAILABLE]
    means = evaluated.results["datasets"]["kvasir"]["mean"]
    assert kvasir[-2:] == [f"{100 * means['pixel_auroc']:.1f}", f"{100 * means['aupro']:.1f}"]


def test_cli_missing_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere.json"
    assert main(["evaluate", "--manifest", str(missing), "--out", str(tmp_path / "run"), *DETECTOR_ARGS]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"medclip-ad: error: {missing}: manifest not found"


def test_cli_missing_image_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_kvasir(tmp_path / "Kvasir-SEG")
    prepare_dataset("kvasir", [root]).save(tmp_path / "kvasir.json")
    (root / "images" / "cju1.jpg").unlink()
    capsys.readouterr()  # drop the preparation's count warning
    assert main(["evaluate", "--manifest", str(tmp_path / "kvasir.json"), "--out", str(tmp_path / "run"),
                 *DETECTOR_ARGS]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error == f"medclip-ad: error: {root / 'images' / 'cju1.jpg'}: listed in the kvasir manifest but not found"
    assert not (tmp_path / "run").exists()
