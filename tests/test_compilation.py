"""`--compile`: the vision encoder compiled by torch.compile gives eager's outputs; CUDA graphs only on CUDA."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image
from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import AnomalyPredictor


def _config(compile_mode: str = "off", device: str = "cpu", **changes) -> DetectorConfig:
    return DetectorConfig(clip_weights="random:tiny", method="ensemble", image_size=224, layers=(6, 12, 18, 24),
                          device=device, batch_size=2, compile=compile_mode, **changes)


def _parse(*options: str) -> DetectorConfig:
    parser = argparse.ArgumentParser()
    add_detector_arguments(parser)
    return detector_config(parser.parse_args(["--clip-weights", "random:tiny", *options]))


def test_compile_option_is_off_by_default_and_inductor_when_given_alone() -> None:
    assert _parse().compile == "off"
    assert _parse("--compile").compile == "inductor"
    assert _parse("--compile", "cuda-graphs").compile == "cuda-graphs"
    with pytest.raises(SystemExit):
        _parse("--compile", "fast")
    with pytest.raises(UserInputError, match="--compile fast"):
        _config("fast")


def test_cuda_graphs_and_int8_are_refused_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*_):
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr("medclip_ad.inference.predictor.build_detector", no_model)
    with pytest.raises(UserInputError, match="--compile cuda-graphs: CUDA graphs need a CUDA device"):
        AnomalyPredictor(_config("cuda-graphs"))
    with pytest.raises(UserInputError, match="--precision int8"):
        AnomalyPredictor(_config("inductor", precision="int8"))


def test_infer_on_the_cpu_refuses_cuda_graphs_and_export_refuses_compiling(tmp_path, capsys) -> None:
    from medclip_ad.cli.main import main
    from medclip_ad.errors import USER_ERROR_EXIT

    image = tmp_path / "slice.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    assert main(["infer", str(image), "--out", str(tmp_path / "out"), "--clip-weights", "random:tiny",
                 "--device", "cpu", "--compile", "cuda-graphs"]) == USER_ERROR_EXIT
    assert "--compile cuda-graphs: CUDA graphs need a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main(["export", "--out", str(tmp_path / "export"), "--clip-weights", "random:tiny", "--compile"]) \
        == USER_ERROR_EXIT
    assert "--compile inductor: exports are traced from the eager model" in capsys.readouterr().err


def _compiled_matches_eager(device: str, compile_mode: str, tiny_backbone) -> None:
    images = [np.random.default_rng(seed).integers(0, 256, (200, 240), dtype=np.uint8) for seed in range(2)]
    eager = AnomalyPredictor(_config(device=device, precision="fp32"), backbone=tiny_backbone)
    compiled = AnomalyPredictor(_config(compile_mode, device=device, precision="fp32"), backbone=tiny_backbone)
    reference = eager.predict(images)
    for _ in range(2):  # the second call replays what the first compiled (and, under CUDA graphs, recorded)
        result = compiled.predict(images)
        np.testing.assert_allclose(result.scores, reference.scores, atol=1e-6, rtol=0)
        for ours, theirs in zip(result.maps, reference.maps):
            np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)  # maps sum 4 layers: range [0, 4]
    assert compiled.model.vision_encoder._compiled_call_impl is not None
    assert eager.model.vision_encoder._compiled_call_impl is None  # a shared backbone stays eager elsewhere
    np.testing.assert_array_equal(eager.predict(images).scores, reference.scores)


@pytest.mark.slow  # TorchInductor compiles the 24-block encoder: about a minute on a 2-core machine
def test_inductor_on_the_cpu_matches_eager(tiny_backbone) -> None:
    _compiled_matches_eager("cpu", "inductor", tiny_backbone)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_match_eager(tiny_backbone) -> None:
    _compiled_matches_eager("cuda", "cuda-graphs", tiny_backbone)
