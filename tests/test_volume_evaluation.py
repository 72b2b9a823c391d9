"""Evaluation on volumes: voxel metrics from histograms, and `medclip-ad evaluate` on a `volumes` manifest.

The voxel metrics are checked against the exact pooled 2-D metrics on single-slice volumes (where 3-D and
2-D connectivity agree). The end-to-end study set holds NIfTI files and DICOM series, normal and with a
lesion mask, scored by the tiny random CLIP at 224 px: the numbers are meaningless, their plumbing is not.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from medclip_ad.cli.main import main
from medclip_ad.datasets import prepare_dataset
from medclip_ad.evaluation import CASES_FILE, RESULTS_FILE, metrics, voxel_metrics
from medclip_ad.evaluation.voxel_metrics import VoxelStatistics
from medclip_ad.io.synthetic import SyntheticLesion, make_synthetic_study

# The generated set is far smaller than any published one.
pytestmark = pytest.mark.filterwarnings("ignore::medclip_ad.datasets.notices.DatasetWarning")

FAST = ["--clip-weights", "random:tiny", "--method", "ensemble", "--image-size", "224", "--device", "cpu"]
SHAPE = (40, 40, 5)


def random_masks_and_maps(count: int = 6, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    masks = np.zeros((count, size, size), np.uint8)
    for index in range(1, count):
        row, column = rng.integers(4, size - 16, 2)
        masks[index, row:row + rng.integers(3, 14), column:column + rng.integers(3, 14)] = 1
    maps = np.clip(rng.random(masks.shape) * 0.6 + masks * rng.random(masks.shape) * 0.8, 0, 1).astype(np.float32)
    return masks, maps


def test_voxel_statistics_reproduce_the_exact_pooled_metrics():
    masks, maps = random_masks_and_maps()
    statistics = VoxelStatistics(upper=1.0)
    for mask, image_map in zip(masks, maps):
        statistics.add(image_map[None], mask[None])
    pairs = {"auroc": (statistics.auroc(), metrics.pixel_auroc(masks, maps)),
             "ap": (statistics.average_precision(), metrics.pixel_ap(masks, maps)),
             "f1": (statistics.f1_max(), metrics.pixel_f1_max(masks, maps)),
             "aupro": (statistics.aupro("reference"), metrics.aupro(masks, maps, "reference")),
             "aupro_standard": (statistics.aupro("standard"), metrics.aupro(masks, maps, "standard"))}
    for name, (ours, exact) in pairs.items():
        assert ours == pytest.approx(exact, abs=2e-4), name
    assert statistics.regions == 5 and sum(len(sample) for sample in statistics.sample_maps) == maps.size


def test_chunked_counting_equals_counting_at_once(monkeypatch):
    masks, maps = random_masks_and_maps()
    whole = VoxelStatistics(upper=1.0)
    whole.add(maps, masks)
    monkeypatch.setattr(voxel_metrics, "CHUNK_VOXELS", 1000)
    chunked = VoxelStatistics(upper=1.0)
    chunked.add(maps, masks)
    for name in ("normal", "anomalous", "region_mass"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name))


def test_a_lesion_across_slices_is_one_region_and_undefined_metrics_are_none():
    mask = np.zeros((8, 8, 4), np.uint8)
    mask[2:4, 2:4, 1:3] = 1  # two slices of one lesion
    mask[6, 6, 3] = 1  # apart from it: a second region
    statistics = VoxelStatistics(upper=1.0)
    statistics.add(mask.astype(np.float32) * 0.9, mask)
    assert statistics.regions == 2 and statistics.auroc() == pytest.approx(1.0)
    empty = VoxelStatistics(upper=1.0)
    empty.add(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), bool))
    assert not empty.defined and empty.auroc() is None and empty.aupro() is None and empty.f1_max() is None


@pytest.fixture(scope="module")
def study_set(tmp_path_factory):
    """`volumes` layout: two normal and two abnormal studies (NIfTI and DICOM series), masks for the abnormal."""
    root = tmp_path_factory.mktemp("volumes")
    data = root / "ct_study"
    for folder in ("normal", "abnormal", "masks"):
        (data / folder).mkdir(parents=True)
    for index, (label, radius) in enumerate((("normal", -1.0), ("normal", -1.0), ("abnormal", 14.0),
                                             ("abnormal", 10.0))):
        study = make_synthetic_study(root / f"made{index}", shape=SHAPE, lesion=SyntheticLesion(radius_mm=radius),
                                     seed=index)
        name = f"case{index}"
        if index % 2:  # odd cases as DICOM series folders, even ones as NIfTI files
            shutil.copytree(study.dicom_dir, data / label / name)
        else:
            shutil.copy(study.nifti_path, data / label / f"{name}.nii.gz")
        if label == "abnormal":
            shutil.copy(study.mask_path, data / "masks" / f"{name}_seg.nii.gz")
    manifest = prepare_dataset("volumes", [data])
    manifest.save(root / "volumes.json")
    return root


@pytest.fixture(scope="module")
def evaluated(study_set):
    out = study_set / "evaluation"
    assert main(["evaluate", "--manifest", str(study_set / "volumes.json"), "--out", str(out), *FAST]) == 0
    return out


def test_evaluate_reports_volume_and_voxel_metrics(evaluated):
    results = json.loads((evaluated / RESULTS_FILE).read_text())
    dataset = next(iter(results["datasets"].values()))
    assert dataset["entries"] == "volumes"
    assert dataset["counts"] == {"images": 4, "normal": 2, "anomalous": 2, "with_masks": 2}
    for metric in ("image_auroc", "image_ap", "pixel_auroc", "aupro", "aupro_standard", "pixel_ap", "pixel_f1_max",
                   "slice_auroc", "slice_ap"):
        assert 0.0 <= dataset["mean"][metric] <= 1.0, metric
    assert dataset["examples"] == {} and any(name.endswith("_pixel.png") for name in dataset["files"])
    report = (evaluated / "results.md").read_text()
    assert "Volumes: the image metrics rank volumes" in report and "| slice AUROC |" in report


def test_volumes_and_slices_score_in_evaluate_as_in_infer(study_set, evaluated):
    with open(evaluated / CASES_FILE, newline="") as handle:
        rows = {row["image"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["abnormal/case2.nii.gz", "abnormal/case3", "normal/case0.nii.gz", "normal/case1"]
    slice_labels, slice_scores = [], []
    for case, row in rows.items():
        out = study_set / f"infer_{case.replace('/', '_')}"
        assert main(["infer", str(study_set / "ct_study" / case), "--out", str(out), *FAST]) == 0
        document = json.loads(next(out.glob("*/scores.json")).read_text())
        assert float(row["score"]) == pytest.approx(document["score"], abs=1e-5)
        anomaly_map = nib.load(next(out.glob("*/anomaly_map.nii.gz"))).get_fdata()
        assert float(row["map_max"]) == pytest.approx(anomaly_map.max(), abs=1e-5)
        name = case.split("/")[1].removesuffix(".nii.gz")
        mask_path = study_set / "ct_study" / "masks" / f"{name}_seg.nii.gz"
        mask = nib.load(mask_path).get_fdata() > 0 if mask_path.exists() else np.zeros(SHAPE, bool)
        slice_labels.append(mask.any(axis=(0, 1)))  # the synthetic studies are axial: slices along the last axis
        slice_scores.append(document["slice_scores"])
    labels, scores = np.concatenate(slice_labels), np.concatenate(slice_scores)
    assert 0 < labels.sum() < labels.size
    mean = next(iter(json.loads((evaluated / RESULTS_FILE).read_text())["datasets"].values()))["mean"]
    assert mean["slice_auroc"] == pytest.approx(metrics.image_auroc(labels, scores), abs=1e-6)
    assert mean["slice_ap"] == pytest.approx(metrics.image_ap(labels, scores), abs=1e-6)


def test_detectors_compare_on_volumes_with_the_volume_options(study_set):
    out = study_set / "comparison"
    assert main(["evaluate", "--manifest", str(study_set / "volumes.json"), "--out", str(out), "--compare", "ensemble",
                 "--aggregation", "mean", *FAST]) == 0
    assert "## volumes (4 volumes)" in (out / "comparison.md").read_text()
    with open(out / "01_ensemble" / CASES_FILE, newline="") as handle:
        rows = {row["image"]: float(row["score"]) for row in csv.DictReader(handle)}
    assert main(["infer", str(study_set / "ct_study" / "normal" / "case0.nii.gz"), "--out", str(study_set / "mean"),
                 "--aggregation", "mean", *FAST]) == 0
    written = json.loads((study_set / "mean" / "case0" / "scores.json").read_text())
    assert rows["normal/case0.nii.gz"] == pytest.approx(written["score"], abs=1e-5)


def test_a_mask_in_another_axis_order_is_reoriented_onto_its_volume(study_set, evaluated, tmp_path):
    manifest = json.loads((study_set / "volumes.json").read_text())
    manifest["root"] = str(study_set / "ct_study")
    for entry in (e for entries in manifest["test"].values() for e in entries if e["mask_path"]):
        original = nib.load(study_set / "ct_study" / entry["mask_path"])
        # the same voxels stored as (rows, columns, slices) with columns running the other way
        reoriented = original.as_reoriented(np.array([[1, -1], [0, 1], [2, 1]]))
        assert not np.allclose(reoriented.affine, original.affine)
        assert not np.array_equal(np.asarray(reoriented.dataobj), np.asarray(original.dataobj))
        entry["mask_path"] = str(tmp_path / Path(entry["mask_path"]).name)
        nib.save(reoriented, entry["mask_path"])
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    assert main(["evaluate", "--manifest", str(tmp_path / "m.json"), "--out", str(out), *FAST]) == 0
    means = [next(iter(json.loads((folder / RESULTS_FILE).read_text())["datasets"].values()))["mean"]
             for folder in (evaluated, out)]
    assert means[1] == pytest.approx(means[0], abs=1e-9)


def test_a_mask_on_another_grid_is_one_clear_error(study_set, tmp_path, capsys):
    manifest = json.loads((study_set / "volumes.json").read_text())
    manifest["root"] = str(study_set / "ct_study")
    entry = next(e for entries in manifest["test"].values() for e in entries if e["mask_path"])
    wrong = tmp_path / "wrong_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] + 1), np.uint8), np.eye(4)), wrong)
    entry["mask_path"] = str(wrong)
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    code = main(["evaluate", "--manifest", str(tmp_path / "m.json"), "--out", str(tmp_path / "out"), *FAST])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and f"{wrong}: mask shape (40, 40, 6) differs from the volume's (40, 40, 5)" in error[-1]
    assert not (tmp_path / "out" / RESULTS_FILE).exists()


def test_a_manifest_mixing_images_and_volumes_is_refused(study_set, tmp_path, capsys):
    manifest = json.loads((study_set / "volumes.json").read_text())
    manifest["root"] = str(study_set / "ct_study")
    first = next(iter(manifest["test"].values()))[0]
    image_entry = {key: value for key, value in first.items() if key != "kind"} | {"img_path": "picture.png"}
    next(iter(manifest["test"].values())).append(image_entry)
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    code = main(["evaluate", "--manifest", str(tmp_path / "m.json"), "--out", str(tmp_path / "out"), *FAST])
    assert code == 2 and "mixes 2-D images and volumes" in capsys.readouterr().err
