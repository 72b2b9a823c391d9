"""prepare-data on tiny datasets generated in their published folder layouts.

Mask pairing is checked with file names whose sorted orders differ between images and masks and with
shuffled directory listings, so any pairing by position would fail these tests.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from medclip_ad.cli import prepare_data
from medclip_ad.datasets import DatasetWarning, Manifest, ManifestEntry, combine_manifests, prepare_dataset
from medclip_ad.datasets.pairing import pair_masks
from medclip_ad.errors import UserInputError
from PIL import Image

# Fixtures are far smaller than the published sets; tests that check the size warning ask for it.
pytestmark = pytest.mark.filterwarnings("ignore::medclip_ad.datasets.notices.DatasetWarning")

MASK_SUFFIX_NAMES = ("a", "a0", "b", "b_1")  # "a" < "a0" but "a0_mask" < "a_mask": sort orders differ


def write_image(path: Path, value: int = 0, foreground: bool = False) -> Path:
    """A tiny image; masks get a foreground block so empty and non-empty masks differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((8, 8), value, dtype=np.uint8)
    if foreground:
        array[2:6, 2:6] = 255
    Image.fromarray(array).convert("RGB" if path.suffix.lower() in (".jpg", ".jpeg") else "L").save(path)
    return path


@pytest.fixture
def shuffled_listings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Directory listings in an order unrelated to names, different for every folder."""
    original = Path.iterdir

    def shuffled(self: Path):
        children = list(original(self))
        random.Random(self.name).shuffle(children)
        return iter(children)

    monkeypatch.setattr(Path, "iterdir", shuffled)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    prepare_data.add_arguments(parser)
    return prepare_data.run(parser.parse_args(list(argv)))


def stem_of_mask(mask_path: str) -> str:
    stem = Path(mask_path).stem
    for suffix in ("_Segmentation", "_mask"):
        stem = stem.removesuffix(suffix)
    return stem


def assert_masks_paired_by_name(manifest: Manifest) -> None:
    for entry in manifest.entries():
        if entry.has_mask:
            assert stem_of_mask(entry.mask_path) == Path(entry.img_path).stem, entry


def make_kvasir(root: Path, names: tuple[str, ...] = ("cju0", "cju1", "cju2")) -> Path:
    for name in names:
        write_image(root / "images" / f"{name}.jpg", value=40)
        write_image(root / "masks" / f"{name}.jpg", foreground=True)
    return root


def make_endo(root: Path, normal: int = 3, abnormal: int = 2) -> Path:
    for index in range(normal + abnormal):
        write_image(root / "images" / f"{index:03d}.png", value=60)
        write_image(root / "masks" / f"{index:03d}.png", foreground=index >= normal)
    return root


# --- manifests -------------------------------------------------------------------------------------------


def test_manifest_round_trip_relative_root(tmp_path: Path) -> None:
    data = make_kvasir(tmp_path / "data" / "Kvasir-SEG")
    manifest = prepare_dataset("kvasir", [data])
    manifest.save(tmp_path / "kvasir.json")
    stored = json.loads((tmp_path / "kvasir.json").read_text())
    assert stored["root"] == "data/Kvasir-SEG"
    assert stored["dataset"] == "kvasir"
    assert stored["train"] == {}
    assert set(stored["test"]["kvasir"][0]) == {"img_path", "mask_path", "cls_name", "specie_name", "anomaly"}
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "data", moved / "data")
    shutil.move(tmp_path / "kvasir.json", moved / "kvasir.json")
    loaded = Manifest.load(moved / "kvasir.json")
    assert loaded.entries() == manifest.entries()
    assert loaded.root == moved / "data" / "Kvasir-SEG"
    for entry in loaded.entries():
        absolute = loaded.absolute(entry)
        assert Path(absolute.img_path).is_file() and Path(absolute.mask_path).is_file()


def test_manifest_root_outside_is_absolute_and_save_is_atomic(tmp_path: Path) -> None:
    data = make_kvasir(tmp_path / "data")
    manifest = prepare_dataset("kvasir", [data])
    out = tmp_path / "manifests" / "k.json"
    manifest.save(out)
    assert json.loads(out.read_text())["root"] == str(data)
    assert [path.name for path in out.parent.iterdir()] == ["k.json"]
    assert Manifest.load(out).entries() == manifest.entries()


def test_volume_entries_round_trip_with_kind(tmp_path: Path) -> None:
    entry = ManifestEntry("ct/case1.nii.gz", "", "ct", "good", 0, kind="volume")
    manifest = Manifest.from_entries(tmp_path, [entry], dataset="volumes")
    manifest.save(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["test"]["ct"][0]["kind"] == "volume"
    assert Manifest.load(tmp_path / "m.json").entries() == [entry]


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"train": {}}', "not a manifest"),
    ('{"test": {"c": [{"img_path": "a.png"}]}}', r"test/c\[0\]: missing mask_path"),
    ('{"test": {"c": [{"img_path": "a", "mask_path": "", "cls_name": "c", "specie_name": "g", "anomaly": 2}]}}',
     "anomaly must be 0 or 1"),
])
def test_malformed_manifest_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserInputError, match=message) as error:
        Manifest.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_combine_manifests_keeps_every_file(tmp_path: Path) -> None:
    kvasir = prepare_dataset("kvasir", [make_kvasir(tmp_path / "a" / "kvasir")])
    endo = prepare_dataset("endo", [make_endo(tmp_path / "b" / "endo")])
    combined = combine_manifests([kvasir, endo])
    assert combined.root == tmp_path
    assert combined.classes() == ["kvasir", "endo"]
    assert combined.dataset == "kvasir+endo"
    originals = [kvasir.absolute(entry) for entry in kvasir.entries()] + [endo.absolute(e) for e in endo.entries()]
    assert [combined.absolute(entry) for entry in combined.entries()] == originals


# --- mask pairing ----------------------------------------------------------------------------------------


def test_pairing_ignores_listing_order() -> None:
    images = [Path(f"img/{name}.png") for name in MASK_SUFFIX_NAMES]
    masks = [Path(f"gt/{name}_mask.png") for name in MASK_SUFFIX_NAMES]
    assert sorted(m.name for m in masks) != [f"{i.stem}_mask.png" for i in sorted(images)]
    random.Random(1).shuffle(masks)
    pairs = pair_masks("test", images, masks, Path("gt"))
    assert {image.stem: mask.name for image, mask in pairs.items()} == {
        name: f"{name}_mask.png" for name in MASK_SUFFIX_NAMES}


def test_pairing_prefers_exact_name_and_rejects_two_candidates(tmp_path: Path) -> None:
    pairs = pair_masks("test", [Path("x.png")], [Path("x_mask.png"), Path("x.tif")], Path("gt"))
    assert pairs[Path("x.png")] == Path("x.tif")
    with pytest.raises(UserInputError, match="several masks for x.png"):
        pair_masks("test", [Path("x.png")], [Path("x_mask.png"), Path("x_seg.png")], Path("gt"))


def test_kvasir_pairs_by_name_with_shuffled_listings(tmp_path: Path, shuffled_listings: None) -> None:
    names = ("cju0", "cju1", "cju2", "cju3", "cju4", "cju5")
    data = tmp_path / "Kvasir-SEG"
    for index, name in enumerate(names):
        write_image(data / "images" / f"{name}.jpg", value=index * 20)
    for name in reversed(names):
        write_image(data / "masks" / f"{name}.jpg", foreground=True)
    with pytest.warns(DatasetWarning, match="kvasir: expected 1000"):
        manifest = prepare_dataset("kvasir", [tmp_path])
    assert manifest.root == data
    assert manifest.classes() == ["kvasir"]
    assert [entry.img_path for entry in manifest.entries()] == [f"images/{name}.jpg" for name in names]
    assert all(entry.anomaly == 1 and entry.mask_path == f"masks/{Path(entry.img_path).name}"
               for entry in manifest.entries())


def test_isic_pairs_segmentation_suffix_where_sorted_orders_differ(tmp_path: Path, shuffled_listings: None) -> None:
    ids = ("ISIC_1", "ISIC_10", "ISIC_2", "ISIC_20")
    for value, name in enumerate(ids):
        write_image(tmp_path / "ISBI2016_ISIC_Part1_Test_Data" / f"{name}.jpg", value=value)
        write_image(tmp_path / "ISBI2016_ISIC_Part1_Test_GroundTruth" / f"{name}_Segmentation.png", foreground=True)
    images = sorted((tmp_path / "ISBI2016_ISIC_Part1_Test_Data").glob("*"))
    masks = sorted((tmp_path / "ISBI2016_ISIC_Part1_Test_GroundTruth").glob("*"))
    assert [i.stem for i in images] != [stem_of_mask(m.name) for m in masks]  # sorted zip would mis-pair
    with pytest.warns(DatasetWarning):
        manifest = prepare_dataset("isic2016", [tmp_path])
    assert len(manifest.entries()) == 4
    assert all(entry.anomaly == 1 and entry.specie_name == "lesion" for entry in manifest.entries())
    assert_masks_paired_by_name(manifest)


def test_missing_mask_names_the_image(tmp_path: Path) -> None:
    data = make_kvasir(tmp_path / "kvasir", names=("a", "b", "c"))
    (data / "masks" / "b.jpg").unlink()
    with pytest.raises(UserInputError, match=r"kvasir: no mask for .*images/b\.jpg in .*masks"):
        prepare_dataset("kvasir", [data])


def test_unmatched_mask_is_a_warning(tmp_path: Path) -> None:
    data = make_kvasir(tmp_path / "kvasir", names=("a",))
    write_image(data / "masks" / "zz.jpg", foreground=True)
    with pytest.warns(DatasetWarning, match=r"1 mask\(s\) in .* match no image by name, ignored \(zz.jpg\)"):
        prepare_dataset("kvasir", [data])


# --- dataset layouts --------------------------------------------------------------------------------------


def test_brainmri_yes_no_and_count_warning_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archive = tmp_path / "archive"
    for name in ("Y1.jpg", "Y2.JPG"):
        write_image(archive / "yes" / name)
    write_image(archive / "no" / "1 no.jpeg")
    write_image(archive / "brain_tumor_dataset" / "yes" / "Y1.jpg")  # the Kaggle archive's duplicate copy
    write_image(archive / "brain_tumor_dataset" / "no" / "1 no.jpeg")
    out = tmp_path / "brainmri.json"
    assert run_cli("brainmri", "--source", str(archive), "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == ("medclip-ad: warning: brainmri: expected 253 images (98 normal + 155 "
                                    "anomalous), found 3 (1 normal + 2 anomalous)")
    assert "test  brainmri: 1 normal, 2 anomalous (0 with masks)" in captured.out
    manifest = Manifest.load(out)
    assert manifest.root == archive
    assert {(entry.img_path, entry.anomaly, entry.specie_name) for entry in manifest.entries()} == {
        ("yes/Y1.jpg", 1, "tumor"), ("yes/Y2.JPG", 1, "tumor"), ("no/1 no.jpeg", 0, "good")}
    assert not any(entry.has_mask for entry in manifest.entries())


def test_br35h_ignores_pred_folder(tmp_path: Path) -> None:
    for folder in ("yes", "no", "pred"):
        write_image(tmp_path / folder / f"{folder}1.jpg")
    with pytest.warns(DatasetWarning, match="br35h: expected 3000"):
        manifest = prepare_dataset("br35h", [tmp_path])
    assert sorted(entry.img_path for entry in manifest.entries()) == ["no/no1.jpg", "yes/yes1.jpg"]


def test_headct_labels_joined_by_id(tmp_path: Path, shuffled_listings: None) -> None:
    for index in range(4):
        write_image(tmp_path / "head_ct" / "head_ct" / f"{index:03d}.png", value=index)
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n3, 0\n0, 1\n2, 1\n1, 0\n")
    with pytest.warns(DatasetWarning, match="headct"):
        manifest = prepare_dataset("headct", [tmp_path])
    assert {entry.img_path: entry.anomaly for entry in manifest.entries()} == {
        "head_ct/head_ct/000.png": 1, "head_ct/head_ct/001.png": 0, "head_ct/head_ct/002.png": 1,
        "head_ct/head_ct/003.png": 0}
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n0, 1\n1, 0\n2, 1\n")
    with pytest.raises(UserInputError, match="003.png: no row for id 3"):
        prepare_dataset("headct", [tmp_path])


def test_endo_labels_from_mask_content(tmp_path: Path, shuffled_listings: None) -> None:
    with pytest.warns(DatasetWarning, match=r"endo: expected 200 images \(163 normal \+ 37 anomalous\), "
                                            r"found 5 \(3 normal \+ 2 anomalous\)"):
        manifest = prepare_dataset("endo", [make_endo(tmp_path / "Endo")])
    by_name = {Path(entry.img_path).stem: entry for entry in manifest.entries()}
    assert [by_name[f"{i:03d}"].anomaly for i in range(5)] == [0, 0, 0, 1, 1]
    assert by_name["000"].mask_path == "" and by_name["000"].specie_name == "good"
    assert by_name["004"].mask_path == "masks/004.png"


def test_clinicdb_and_tn3k_folder_names(tmp_path: Path) -> None:
    for name in ("1", "10", "2"):
        write_image(tmp_path / "clinic" / "Original" / f"{name}.tif")
        write_image(tmp_path / "clinic" / "Ground Truth" / f"{name}.tif", foreground=True)
        write_image(tmp_path / "tn3k" / "test-image" / f"{name}.jpg")
        write_image(tmp_path / "tn3k" / "test-mask" / f"{name}.jpg", foreground=True)
    with pytest.warns(DatasetWarning):
        clinic = prepare_dataset("clinicdb", [tmp_path / "clinic"])
        tn3k = prepare_dataset("tn3k", [tmp_path / "tn3k"])
    assert clinic.entries()[0].mask_path == "Ground Truth/1.tif"
    assert tn3k.classes() == ["tn3k"] and len(tn3k.entries()) == 3
    assert_masks_paired_by_name(clinic)
    assert_masks_paired_by_name(tn3k)


def test_mvtec_two_classes(tmp_path: Path, shuffled_listings: None) -> None:
    for cls_name in ("bottle", "cable"):
        for index in range(2):
            write_image(tmp_path / cls_name / "test" / "good" / f"{index:03d}.png")
            write_image(tmp_path / cls_name / "train" / "good" / f"{index:03d}.png")
        for name in ("0", "00", "1"):
            write_image(tmp_path / cls_name / "test" / "crack" / f"{name}.png")
            write_image(tmp_path / cls_name / "ground_truth" / "crack" / f"{name}_mask.png", foreground=True)
    with pytest.warns(DatasetWarning, match="mvtec: expected 1725"):
        manifest = prepare_dataset("mvtec", [tmp_path])
    assert manifest.classes() == ["bottle", "cable"]
    assert manifest.classes("train") == ["bottle", "cable"]
    assert len(manifest.entries("train")) == 4 and not any(entry.anomaly for entry in manifest.entries("train"))
    bottle = manifest.splits["test"]["bottle"]
    assert sorted((entry.specie_name, entry.anomaly) for entry in bottle) == [("crack", 1)] * 3 + [("good", 0)] * 2
    assert {entry.img_path: entry.mask_path for entry in bottle if entry.anomaly} == {
        f"bottle/test/crack/{name}.png": f"bottle/ground_truth/crack/{name}_mask.png" for name in ("0", "00", "1")}
    (tmp_path / "cable" / "ground_truth" / "crack" / "00_mask.png").unlink()
    with pytest.raises(UserInputError, match=r"no mask for .*cable/test/crack/00\.png"):
        prepare_dataset("mvtec", [tmp_path])


def test_visa_split_csv(tmp_path: Path) -> None:
    rows = [("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""),
            ("candle", "test", "normal", "candle/Data/Images/Normal/0001.JPG", ""),
            ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG", "candle/Data/Masks/Anomaly/000.png"),
            ("pcb1", "test", "anomaly", "pcb1/Data/Images/Anomaly/007.JPG", "pcb1/Data/Masks/Anomaly/007.png")]
    for _, _, _, image, mask in rows:
        write_image(tmp_path / image)
        if mask:
            write_image(tmp_path / mask, foreground=True)
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n" + "".join(",".join(row) + "\n" for row in rows))
    with pytest.warns(DatasetWarning, match="visa"):
        manifest = prepare_dataset("visa", [tmp_path])
    assert manifest.classes() == ["candle", "pcb1"] and manifest.classes("train") == ["candle"]
    assert [(e.anomaly, e.mask_path) for e in manifest.splits["test"]["candle"]] == [
        (0, ""), (1, "candle/Data/Masks/Anomaly/000.png")]
    (tmp_path / "pcb1" / "Data" / "Masks" / "Anomaly" / "007.png").unlink()
    with pytest.raises(UserInputError, match=r"1cls.csv: line 5: .*007.png not found"):
        prepare_dataset("visa", [tmp_path])


def test_folder_layout_pairs_masks_by_name(tmp_path: Path, shuffled_listings: None) -> None:
    data = tmp_path / "my_xrays"
    write_image(data / "normal" / "n1.png")
    for name in MASK_SUFFIX_NAMES:
        write_image(data / "abnormal" / f"{name}.png")
        write_image(data / "masks" / f"{name}_mask.png", foreground=True)
    manifest = prepare_dataset("folder", [data])
    assert manifest.classes() == ["my_xrays"]
    assert {entry.img_path: entry.mask_path for entry in manifest.entries()} == {
        "normal/n1.png": "", **{f"abnormal/{name}.png": f"masks/{name}_mask.png" for name in MASK_SUFFIX_NAMES}}
    (data / "masks" / "b_1_mask.png").unlink()
    with pytest.raises(UserInputError, match=r"no mask for .*abnormal/b_1\.png"):
        prepare_dataset("folder", [data])
    shutil.rmtree(data / "masks")
    assert not any(entry.has_mask for entry in prepare_dataset("folder", [data]).entries())


@pytest.mark.parametrize("two_sources", [True, False])
def test_colondb_endo_auxiliary_set(tmp_path: Path, two_sources: bool, capsys: pytest.CaptureFixture) -> None:
    colondb = make_kvasir(tmp_path / "data" / "CVC-ColonDB", names=("1", "2"))
    endo = make_endo(tmp_path / "data" / "Endo", normal=3, abnormal=2)
    sources = [str(colondb), str(endo)] if two_sources else [str(tmp_path / "data")]
    out = tmp_path / "aux.json"
    assert run_cli("colondb+endo", "--source", *sources, "--out", str(out)) == 0
    assert "colondb+endo: expected 543 images (163 normal + 380 anomalous), found 5" in capsys.readouterr().err
    manifest = Manifest.load(out)
    assert manifest.dataset == "colondb+endo"
    assert manifest.classes() == ["colondb", "endo"]
    assert [(e.img_path, e.anomaly, e.mask_path) for e in manifest.splits["test"]["colondb"]] == [
        ("CVC-ColonDB/images/1.jpg", 1, "CVC-ColonDB/masks/1.jpg"),
        ("CVC-ColonDB/images/2.jpg", 1, "CVC-ColonDB/masks/2.jpg")]
    assert [(e.img_path, e.anomaly) for e in manifest.splits["test"]["endo"]] == [
        (f"Endo/images/{i:03d}.png", 0) for i in range(3)]


def test_volumes_layout_lists_studies(tmp_path: Path) -> None:
    data = tmp_path / "ct_study"
    (data / "normal").mkdir(parents=True)
    (data / "normal" / "case1.nii.gz").write_bytes(b"nifti")
    (data / "abnormal" / "case2").mkdir(parents=True)
    (data / "abnormal" / "case2" / "IM0001").write_bytes(b"dicom")
    (data / "abnormal" / "case3.nii").write_bytes(b"nifti")
    (data / "masks").mkdir()
    (data / "masks" / "case2_seg.nii.gz").write_bytes(b"nifti")
    (data / "masks" / "case3.nii.gz").write_bytes(b"nifti")
    manifest = prepare_dataset("volumes", [data])
    assert [(e.img_path, e.mask_path, e.anomaly, e.kind) for e in manifest.entries()] == [
        ("normal/case1.nii.gz", "", 0, "volume"),
        ("abnormal/case2", "masks/case2_seg.nii.gz", 1, "volume"),
        ("abnormal/case3.nii", "masks/case3.nii.gz", 1, "volume")]
    (data / "masks" / "case3.nii.gz").unlink()
    with pytest.raises(UserInputError, match=r"no mask for .*abnormal/case3\.nii"):
        prepare_dataset("volumes", [data])


def test_anomalyclip_meta_json_source(tmp_path: Path) -> None:
    write_image(tmp_path / "ds" / "brain" / "img" / "a.png")
    write_image(tmp_path / "ds" / "brain" / "img" / "b.png")
    write_image(tmp_path / "ds" / "brain" / "gt" / "b.png", foreground=True)
    meta = {"train": {}, "test": {"brain": [
        {"img_path": "brain/img/a.png", "mask_path": "", "cls_name": "brain", "specie_name": "good", "anomaly": 0},
        {"img_path": "brain/img/b.png", "mask_path": "brain/gt/b.png", "cls_name": "brain",
         "specie_name": "tumor", "anomaly": 1}]}}
    (tmp_path / "ds" / "meta.json").write_text(json.dumps(meta))
    raw = Manifest.load(tmp_path / "ds" / "meta.json")
    assert raw.root == tmp_path / "ds" and raw.classes() == ["brain"]
    assert raw.absolute(raw.entries()[1]).mask_path == str(tmp_path / "ds" / "brain" / "gt" / "b.png")
    out = tmp_path / "out" / "brain.json"
    assert run_cli("meta", "--source", str(tmp_path / "ds" / "meta.json"), "--out", str(out)) == 0
    converted = Manifest.load(out)
    assert converted.entries() == raw.entries() and converted.root == raw.root
    assert json.loads(out.read_text())["test"] == meta["test"]
    (tmp_path / "ds" / "brain" / "gt" / "b.png").unlink()
    with pytest.raises(UserInputError, match=r"meta.json: lists .*gt/b.png, which does not exist"):
        run_cli("meta", "--source", str(tmp_path / "ds" / "meta.json"), "--out", str(out), "--overwrite")


# --- command line -----------------------------------------------------------------------------------------


def test_cli_refuses_to_overwrite_and_wrong_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_kvasir(tmp_path / "kvasir")
    out = tmp_path / "k.json"
    assert run_cli("kvasir", "--source", str(data), "--out", str(out)) == 0
    assert "test  kvasir: 0 normal, 3 anomalous (3 with masks)" in capsys.readouterr().out
    with pytest.raises(UserInputError, match="already exists"):
        run_cli("kvasir", "--source", str(data), "--out", str(out))
    assert run_cli("kvasir", "--source", str(data), "--out", str(out), "--overwrite") == 0
    with pytest.raises(UserInputError, match="at most 1 --source"):
        run_cli("kvasir", "--source", str(data), str(data), "--out", str(out), "--overwrite")
    with pytest.raises(UserInputError, match=r"no kvasir layout found \(expected images/ and masks/"):
        run_cli("kvasir", "--source", str(tmp_path / "kvasir" / "images"), "--out", str(out), "--overwrite")
