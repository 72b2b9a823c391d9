"""`--config FILE` (YAML or JSON, the flags' names as keys; flags win) and `--log-level`/`--log-format`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from medclip_ad.cli.main import _parse, build_parser, main
from PIL import Image


def _args(*argv: str):
    return _parse(build_parser(), list(argv))


def test_file_values_become_defaults_and_flags_win(tmp_path):
    config = tmp_path / "infer.yaml"
    config.write_text("inputs: [a.png, b.nii.gz]\nout: results\naggregation: topk_mean\ntop-k: 3\n"
                      "clip_weights: random:tiny\nlayers: [6, 24]\noverwrite: true\n")
    args = _args("infer", "--config", str(config), "--top-k", "7")
    assert args.inputs == [Path("a.png"), Path("b.nii.gz")] and args.out == Path("results")
    assert (args.aggregation, args.top_k, args.clip_weights, args.layers, args.overwrite) == \
        ("topk_mean", 7, "random:tiny", [6, 24], True)
    assert _args("infer", "c.png", f"--config={config}").inputs == [Path("c.png")]


@pytest.mark.parametrize("text, suffix, message", [
    ("bogus: 1\n", ".yaml", "unknown option 'bogus' for `medclip-ad infer`"),
    ("aggregation: median\n", ".yaml", "aggregation: 'median' is not one of max, topk_mean, mean"),
    ("- a\n- b\n", ".yaml", "must hold a mapping"),
    ("{not json", ".json", "not valid JSON"),
    ("top-k: [1, 2]\n", ".yml", "top-k: takes one value, not a list"),
    ("top-k: many\n", ".yml", "top-k: 'many' is not valid"),
])
def test_bad_config_files_are_one_error_line(tmp_path, capsys, text, suffix, message):
    config = tmp_path / f"run{suffix}"
    config.write_text(text)
    assert main(["infer", "x.png", "--out", str(tmp_path / "out"), "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith(f"medclip-ad: error: --config {config}: {message}")
    assert not (tmp_path / "out").exists()


def test_a_json_config_runs_inference(tmp_path, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)).save(tmp_path / "scan.png")
    config = tmp_path / "infer.json"
    config.write_text(json.dumps({"inputs": [str(tmp_path / "scan.png")], "out": str(tmp_path / "results"),
                                  "method": "ensemble", "clip-weights": "random:tiny", "image-size": 224,
                                  "device": "cpu"}))
    assert main(["infer", "--config", str(config)]) == 0
    document = json.loads((tmp_path / "results" / "scan" / "scores.json").read_text())
    assert document["model"]["method"] == "ensemble" and document["model"]["image_size"] == 224


def test_json_log_lines(capsys):
    assert main(["bundle-path", "--log-format", "json", "--log-level", "warning"]) == 0
    logging.getLogger("medclip_ad.test").info("not shown")
    logging.getLogger("medclip_ad.test").warning("shown %d", 1)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("warning", "medclip_ad.test", "shown 1")]
    assert lines[0]["time"].endswith("Z")
