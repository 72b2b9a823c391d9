"""One command that checks and measures the device path: parity, bf16 drift, model throughput, end to end.

    bash benchmarks/gpu_check.sh                      # on a GPU machine, under 8 minutes on one H100/H200
    bash benchmarks/gpu_check.sh --device cpu --quick # the same checks, small, anywhere (a test runs this)

(a) the reference-parity fixtures on the device in fp32 (TF32 off), max differences against the
fixture tolerances; (b) bf16 against fp32 on the same inputs (scores and maps); (c) model throughput of
ViT-L/14@518 with random weights at several batch sizes in fp32 and bf16 (slices/s, peak memory);
(d) end-to-end `medclip-ad infer` on a generated CT series (slices/s including reading and writing);
(e) `--compile inductor` and `--compile cuda-graphs` against eager at one batch size (compile time,
slices/s, largest score and map change). Prints one table and exits 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from medclip_ad.cli.main import main as cli_main
from medclip_ad.config import DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.synthetic import make_synthetic_study
from medclip_ad.modeling.clip_backbone import load_clip
from PIL import Image

from machine import machine_line

PARITY_IMAGES = ("phantom_lesion", "phantom_normal", "noise")
PARITY_LAYERS = {"L24": (24,), "L6_12_18_24": (6, 12, 18, 24)}
# The fixture README's tolerances (fp32).
TOLERANCES = {"text": 1e-4, "scores": 1e-4, "maps": 5e-4}


@dataclass(frozen=True)
class CheckSizes:
    """How big each measurement is: the full run for a GPU, a quick one that proves the script works."""

    preset: str
    image_size: int
    batch_sizes: tuple[int, ...]
    repeats: int
    ct_shape: tuple[int, int, int]
    infer_batch: int
    compile_batch: int


FULL = CheckSizes("vit-l-14-336", 518, (1, 8, 32, 64), 5, (512, 512, 300), 32, 8)
QUICK = CheckSizes("tiny", 224, (1, 2), 1, (64, 64, 4), 2, 2)


@dataclass
class Row:
    check: str
    value: str
    limit: str = ""
    ok: bool | None = None


def shared_dir() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared"
    return Path(os.environ.get("MEDCLIP_AD_SHARED", default))


def set_fp32_exact(device: torch.device) -> None:
    """TF32 off: the parity check measures fp32, not the tensor cores' 10-bit mantissa."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def parity_rows(device: str) -> list[Row]:
    parity = shared_dir() / "fixtures" / "parity"
    expected = np.load(parity / "expected.npz")
    weights = str(parity / "tiny_clip_openai_format.pt")
    backbone = load_clip(weights)
    images = [np.asarray(Image.open(parity / f"{name}.png").convert("RGB")) for name in PARITY_IMAGES]
    rows = []
    for setting, layers in PARITY_LAYERS.items():
        config = DetectorConfig(clip_weights=weights, prompts=str(parity / "tiny_prompts_reference_format.pth"),
                                layers=layers, image_size=518, device=device, batch_size=3, precision="fp32")
        predictor = AnomalyPredictor(config, backbone=backbone)
        result = predictor.predict(images)
        differences = {
            "text": float(np.abs(predictor.model.text_features().detach().cpu().numpy()
                                 - expected["text_features"][0]).max()),
            "scores": float(np.abs(result.scores - expected[f"{setting}/scores"]).max()),
            "maps": float(max(np.abs(m - e).max() for m, e in zip(result.maps, expected[f"{setting}/maps"]))),
        }
        for what, difference in differences.items():
            rows.append(Row(f"(a) parity {setting} {what}, fp32", f"{difference:.2e}", f"<= {TOLERANCES[what]:.0e}",
                            difference <= TOLERANCES[what]))
    return rows


def bf16_rows(device: str, sizes: CheckSizes) -> list[Row]:
    images = [np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8) for seed in range(8)]
    base = DetectorConfig(clip_weights=f"random:{sizes.preset}", method="ensemble", image_size=sizes.image_size,
                          device=device, batch_size=8, precision="fp32")
    fp32 = AnomalyPredictor(base)
    try:
        bf16 = AnomalyPredictor(DetectorConfig(**{**base.__dict__, "precision": "bf16"}), backbone=fp32.backbone)
    except UserInputError as error:
        return [Row("(b) bf16 vs fp32", f"not run: {error}")]
    reference, reduced = fp32.predict(images), bf16.predict(images)
    score_difference = float(np.abs(reference.scores - reduced.scores).max())
    map_difference = float(max(np.abs(a - b).max() for a, b in zip(reference.maps, reduced.maps)))
    return [Row("(b) bf16 vs fp32 scores, max abs", f"{score_difference:.2e}"),
            Row("(b) bf16 vs fp32 maps, max abs", f"{map_difference:.2e}")]


def throughput_rows(device: str, sizes: CheckSizes) -> list[Row]:
    rows = []
    backbone = None
    for precision in ("fp32", "bf16"):
        config = DetectorConfig(clip_weights=f"random:{sizes.preset}", method="ensemble",
                                image_size=sizes.image_size, device=device, precision=precision)
        try:
            predictor = AnomalyPredictor(config, backbone=backbone)
        except UserInputError as error:
            rows.append(Row(f"(c) {sizes.preset}@{sizes.image_size} {precision}", f"not run: {error}"))
            continue
        backbone = predictor.backbone
        for batch_size in sizes.batch_sizes:
            images = torch.randn(batch_size, 3, sizes.image_size, sizes.image_size)
            if predictor.device.type == "cuda":
                images = images.pin_memory()
                torch.cuda.reset_peak_memory_stats(predictor.device)
            predictor.predict_tensor(images)  # warm-up
            seconds = _timed(lambda: [predictor.predict_tensor(images) for _ in range(sizes.repeats)], predictor.device)
            rate = batch_size * sizes.repeats / seconds
            memory = (f", peak {torch.cuda.max_memory_allocated(predictor.device) / 2**30:.1f} GiB"
                      if predictor.device.type == "cuda" else "")
            rows.append(Row(f"(c) {sizes.preset}@{sizes.image_size} {precision} batch {batch_size}",
                            f"{rate:.1f} slices/s{memory}"))
    return rows


def end_to_end_rows(device: str, sizes: CheckSizes) -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        study = make_synthetic_study(Path(folder) / "study", shape=sizes.ct_shape,
                                     spacing=(0.8, 0.8, 1.0))
        argv = ["infer", str(study.dicom_dir), "--out", str(Path(folder) / "out"), "--clip-weights",
                f"random:{sizes.preset}", "--method", "ensemble", "--image-size", str(sizes.image_size),
                "--device", device, "--batch-size", str(sizes.infer_batch)]
        start = time.perf_counter()
        code = cli_main(argv)
        seconds = time.perf_counter() - start
    slices = sizes.ct_shape[2]
    return [Row(f"(d) infer {'x'.join(map(str, sizes.ct_shape))} CT series, {sizes.preset}, auto precision",
                f"{slices / seconds:.1f} slices/s ({seconds:.1f} s, model load included)", "exit 0", code == 0)]


def compile_rows(device: str, sizes: CheckSizes) -> list[Row]:
    """(e) each --compile mode against eager on the same batch, in the device's default precision."""
    images = torch.randn(sizes.compile_batch, 3, sizes.image_size, sizes.image_size,
                         generator=torch.Generator().manual_seed(0))
    base = DetectorConfig(clip_weights=f"random:{sizes.preset}", method="ensemble", image_size=sizes.image_size,
                          device=device)
    eager = AnomalyPredictor(base)
    label = f"(e) {sizes.preset}@{sizes.image_size} {eager.provenance()['precision']} batch {sizes.compile_batch}"
    eager_scores, eager_maps = eager.predict_tensor(images)  # warm-up, and the outputs compared against
    seconds = _timed(lambda: [eager.predict_tensor(images) for _ in range(sizes.repeats)], eager.device)
    rows = [Row(f"{label} eager", f"{sizes.compile_batch * sizes.repeats / seconds:.1f} slices/s")]
    for mode in ("inductor", "cuda-graphs"):
        try:
            compiled = AnomalyPredictor(DetectorConfig(**{**base.__dict__, "compile": mode}), backbone=eager.backbone)
            first = _timed(lambda: compiled.predict_tensor(images), compiled.device)
            compiled.predict_tensor(images)  # CUDA graphs record on a warm call
            seconds = _timed(lambda: [compiled.predict_tensor(images) for _ in range(sizes.repeats)], compiled.device)
            scores, maps = compiled.predict_tensor(images)
        except UserInputError as error:
            rows.append(Row(f"{label} compile {mode}", f"not run: {error}"))
            continue
        except Exception as error:  # a compiler failure must not cost the rest of the table
            rows.append(Row(f"{label} compile {mode}", f"failed: {type(error).__name__}: {str(error).splitlines()[0]}"))
            continue
        score_difference = float((scores - eager_scores).abs().max())
        map_difference = float((maps - eager_maps).abs().max())
        rows.append(Row(f"{label} compile {mode}",
                        f"{sizes.compile_batch * sizes.repeats / seconds:.1f} slices/s, first batch {first:.0f} s; "
                        f"vs eager scores {score_difference:.1e}, maps {map_difference:.1e}"))
    return rows


def _timed(function, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def print_table(rows: list[Row]) -> None:
    width = max(len(row.check) for row in rows)
    for row in rows:
        verdict = "" if row.ok is None else ("PASS" if row.ok else "FAIL")
        print(f"{row.check:<{width}}  {row.value:<44}  {row.limit:<8}  {verdict}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes: checks the script, not the GPU")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device)
    set_fp32_exact(device)
    print(machine_line(args.device))
    rows = parity_rows(args.device)
    rows += bf16_rows(args.device, sizes)
    rows += throughput_rows(args.device, sizes)
    rows += end_to_end_rows(args.device, sizes)
    rows += compile_rows(args.device, sizes)
    print_table(rows)
    return 1 if any(row.ok is False for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
