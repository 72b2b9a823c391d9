"""`medclip-ad demo`: a synthetic CT study with a known lesion, run end to end on any machine.

It uses real CLIP weights when it can get them; offline, it says so in a loud banner and runs with
random weights, so the whole workflow (DICOM and NIfTI in, maps, overlays, viewer) is still visible.
Only the demo falls back like this; `infer`, `train` and `evaluate` never do.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from typing import TYPE_CHECKING

from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.cli.infer import add_case_arguments, case_options
from medclip_ad.errors import UserInputError
from medclip_ad.methods import CHECKPOINT_FREE_METHOD

if TYPE_CHECKING:
    from medclip_ad.inference.predictor import AnomalyPredictor
    from medclip_ad.modeling.clip_backbone import ClipBackbone

HELP = "generate a synthetic CT study with a known lesion (DICOM series and NIfTI) and run it end to end"
DEMO_MARKER = ".medclip-ad-demo"
FALLBACK_WEIGHTS = "random:tiny"
DEMO_WINDOW = "soft_tissue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("medclip-ad-demo"), metavar="DIR",
                        help="demo folder (replaced on each run if it holds an earlier demo)")
    add_case_arguments(parser)
    add_detector_arguments(parser, batch_size=8)


def run(args: argparse.Namespace) -> int:
    from medclip_ad.inference.case import run_case
    from medclip_ad.inference.predictor import AnomalyPredictor
    from medclip_ad.io.discovery import discover_cases
    from medclip_ad.io.readers import read_case
    from medclip_ad.io.synthetic import make_synthetic_study

    backbone = _backbone_or_fallback(args.clip_weights)
    _prepare_folder(args.out)
    study = make_synthetic_study(args.out / "study")
    config = replace(detector_config(args), clip_weights=backbone.source)
    if not args.method and not args.prompts:  # nothing learned to run: the training-free ensemble
        config = replace(config, method=CHECKPOINT_FREE_METHOD)
    predictor = AnomalyPredictor(config, backbone=backbone)
    options = replace(case_options(args), overwrite=True)
    if options.window is None:  # the NIfTI copy carries no modality tag: window both copies alike
        options = replace(options, window=DEMO_WINDOW)
    results_dir = args.out / "results"
    sources, problems = discover_cases([study.dicom_dir, study.nifti_path])
    if problems:
        raise UserInputError(f"demo study unreadable: {problems[0].path}: {problems[0].message}")
    documents = [run_case(predictor, read_case(source), results_dir, options) for source in sources]
    _print_summary(args.out, study, documents, predictor)
    return 0


def _prepare_folder(out: Path) -> None:
    if out.exists():
        if not (out / DEMO_MARKER).exists():
            raise UserInputError(f"{out}: exists and is not a medclip-ad demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("created by `medclip-ad demo`; safe to delete\n")


def _backbone_or_fallback(weights: str) -> ClipBackbone:
    from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING
    from medclip_ad.modeling.clip_backbone import load_clip

    try:
        return load_clip(weights)
    except UserInputError as error:
        if weights != "openai":
            raise
        banner = "!" * 100
        print(f"{banner}\n!! No real CLIP weights: {error}\n!! The demo runs with {FALLBACK_WEIGHTS}. "
              f"{RANDOM_WEIGHTS_WARNING}.\n!! For real results: medclip-ad demo --clip-weights "
              f"/path/to/ViT-L-14-336px.pt\n{banner}", file=sys.stderr)
        return load_clip(FALLBACK_WEIGHTS)


def _print_summary(out: Path, study, documents: list[dict], predictor: AnomalyPredictor) -> None:
    print(f"\nmedclip-ad demo: synthetic CT study in {out / 'study'} "
          f"(lesion on slices {study.lesion_slices[0]}..{study.lesion_slices[-1]} of {study.volume_hu.shape[2]})")
    print(f"model: {predictor.config.method} on {predictor.backbone.source}"
          + ("  [RANDOM WEIGHTS: outputs are meaningless]" if predictor.random_weights else ""))
    for document in documents:
        case_dir = out / "results" / document["case"]
        print(f"  {document['case']}: score {document['score']:.4f}, top slices {document['top_slices'][:5]}")
        print(f"    map: {case_dir / 'anomaly_map.nii.gz'}\n    overlays: {case_dir / 'overlays'}")
    print(f"\nOpen in the viewer:  medclip-ad view {out / 'results' / documents[0]['case']} --data-root {out}")
