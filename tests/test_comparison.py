"""`medclip-ad evaluate --compare`: several detectors on the same data, one comparison table.

The four methods run on the tiny random backbone at 224 px: `ensemble`, `anomalyclip` with the parity
fixture's reference prompts, `rwda` with a head trained here in a second, and `adaclip` with its initial
weights. Every number in the table
must be the one in that detector's own report, and a detector evaluated alone must give the same numbers
(the shared backbone carries nothing from one detector to the next).
"""

from __future__ import annotations

import json

import pytest
import torch
from medclip_ad.cli.main import main
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets import prepare_dataset
from medclip_ad.evaluation import evaluate
from medclip_ad.evaluation.comparison import COMPARISON_JSON, COMPARISON_MARKDOWN, PUBLISHED_ROW
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.methods.adaclip.checkpoint import save_adaclip_checkpoint
from medclip_ad.methods.adaclip.detector import AdaCLIP
from medclip_ad.methods.rwda.random_word_prompts import RandomWordSettings
from medclip_ad.methods.rwda.training import RandomWordTrainingConfig, train_random_word_head
from medclip_ad.modeling.clip_backbone import load_clip
from medclip_ad.modeling.text_encoder import TextEncoder

from mini_datasets import make_brainmri, make_endo

# The generated sets are far smaller than the published ones.
pytestmark = pytest.mark.filterwarnings("ignore::medclip_ad.datasets.notices.DatasetWarning")

BACKBONE = ["--clip-weights", "random:tiny", "--image-size", "224", "--device", "cpu", "--batch-size", "8"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, parity_dir):
    """Two manifests (pixel masks; image labels only) and the four detectors as `--compare` spells them."""
    root = tmp_path_factory.mktemp("comparison")
    manifests = []
    for name, maker in (("endo", make_endo), ("brainmri", make_brainmri)):
        manifest = prepare_dataset(name, [maker(root / name)])
        manifest.save(root / f"{name}.json")
        manifests.append(manifest)
    head = train_random_word_head(DetectorConfig(clip_weights="random:tiny", device="cpu"), root / "rwda",
                                  RandomWordTrainingConfig(epochs=1, prompts=RandomWordSettings(prompts_per_class=16)),
                                  show_progress=False).final_checkpoint
    backbone = load_clip("random:tiny")
    torch.manual_seed(0)
    adaclip = root / "adaclip.safetensors"  # initial weights: the comparison needs a checkpoint, not a good one
    save_adaclip_checkpoint(adaclip, AdaCLIP(TextEncoder(backbone.model), backbone.model, 224), {"note": "test"})
    detectors = ["ensemble", f"anomalyclip:{parity_dir / 'tiny_prompts_reference_format.pth'}", f"rwda:{head}",
                 f"adaclip:{adaclip}"]
    return root, manifests, detectors


@pytest.fixture(scope="module")
def compared(inputs):
    root, _, detectors = inputs
    out = root / "out"
    code = main(["evaluate", "--manifest", str(root / "endo.json"), str(root / "brainmri.json"), "--out", str(out),
                 "--compare", *detectors, *BACKBONE])
    assert code == 0
    return out


def test_one_row_per_detector_with_the_numbers_of_its_own_report(inputs, compared):
    _, _, detectors = inputs
    document = json.loads((compared / COMPARISON_JSON).read_text())
    rows = document["detectors"]
    assert [row["name"] for row in rows] == detectors
    assert [row["method"] for row in rows] == ["ensemble", "anomalyclip", "rwda", "adaclip"]
    assert rows[3]["model"]["layers"] == [6, 12, 18, 24]
    assert "RANDOM WEIGHTS" in document["warning"]
    assert list(document["table_metrics"]) == ["image_auroc", "image_ap", "pixel_auroc", "aupro"]
    for row in rows:
        report = json.loads((compared / row["report"]).read_text())
        assert report["name"] == row["name"] and report["method"] == row["method"]
        assert set(row["datasets"]) == {"endo", "brainmri"}
        for dataset, values in row["datasets"].items():
            assert values["mean"] == report["datasets"][dataset]["mean"]
    assert rows[0]["checkpoint"] is None and rows[2]["checkpoint_sha256"]
    assert document["published"]["datasets"]["brainmri"]["image_auroc"] == pytest.approx(0.903)


def test_markdown_table_lists_every_detector_per_dataset(inputs, compared):
    _, _, detectors = inputs
    text = (compared / COMPARISON_MARKDOWN).read_text()
    assert "RANDOM WEIGHTS" in text
    sections = text.split("\n## ")[1:]
    assert [section.split(" ")[0] for section in sections] == ["endo", "brainmri"]
    for section in sections:
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == detectors
        assert f"| {PUBLISHED_ROW} |" in section
    brainmri = json.loads((compared / COMPARISON_JSON).read_text())["detectors"][0]["datasets"]["brainmri"]["mean"]
    image_auroc, image_ap = 100 * brainmri["image_auroc"], 100 * brainmri["image_ap"]
    assert f"| `ensemble` | {image_auroc:.1f} | {image_ap:.1f} | n/a | n/a |" in text


@pytest.mark.parametrize("index", [2, 3])
def test_a_detector_alone_gives_the_same_numbers(inputs, compared, tmp_path, index):
    _, manifests, detectors = inputs
    method, _, checkpoint = detectors[index].partition(":")
    predictor = AnomalyPredictor(DetectorConfig(clip_weights="random:tiny", method=method, prompts=checkpoint,
                                                image_size=224, device="cpu"))
    alone = evaluate(predictor, manifests, tmp_path, show_progress=False)
    row = json.loads((compared / COMPARISON_JSON).read_text())["detectors"][index]
    for dataset, values in row["datasets"].items():
        assert values["mean"] == alone.to_json()["datasets"][dataset]["mean"]


@pytest.mark.parametrize("extra, message", [
    (["--compare", "ensemble"], "already exists"),
    (["--compare", "nosuch", "ensemble"], "unknown method 'nosuch'"),
    (["--compare", "ensemble", "ensemble"], "ensemble is listed twice"),
    (["--compare", "rwda:missing.safetensors"], "missing.safetensors: checkpoint of --compare"),
    (["--compare", "ensemble", "--prompts", "p.safetensors"], "--prompts: not used with --compare"),
])
def test_bad_comparisons_are_refused_before_any_model_loads(inputs, compared, extra, message, capsys):
    root, _, _ = inputs
    code = main(["evaluate", "--manifest", str(root / "endo.json"), "--out", str(compared), *extra, *BACKBONE])
    assert code == 2 and message in capsys.readouterr().err
