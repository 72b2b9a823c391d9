"""What the MONAI bundle's configs call: thin adapters from config values to the package's own APIs.

The bundle (`bundles/anomalyclip_zeroshot_medical`) holds configs only; their `_target_`s and `$`
expressions point here or at the package's classes, so the bundle runs from any working directory with
the package installed. Inference is shaped the MONAI way: reading a case is the first `preprocessing`
transform, scoring it the `inferer`, and writing it the last `postprocessing` transform, so a host with
its own I/O (MONAI Deploy) can take reading and writing out and keep the scoring; `CaseInference` drives
the cases through all three like an evaluator.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from monai.inferers import Inferer
from monai.transforms import Transform
from tqdm import tqdm

from medclip_ad.bundle.network import AnomalyMapNetwork
from medclip_ad.config import DetectorConfig
from medclip_ad.datasets.manifest import Manifest
from medclip_ad.errors import UserInputError, sigterm_as_interrupt
from medclip_ad.evaluation import REPORT_FILE, RESULTS_FILE, EvaluationReport, check_evaluation_inputs, evaluate
from medclip_ad.inference.case import CaseOptions, ScanPrediction, missing_outputs, predict_scan, write_case
from medclip_ad.inference.case_failures import CaseFailures
from medclip_ad.inference.case_folder import case_folder_complete, check_case_folder_free
from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor
from medclip_ad.io.dicom_export import dicom_source_files
from medclip_ad.io.discovery import CaseSource, discover_cases
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan
from medclip_ad.io.writers import check_output_folder
from medclip_ad.methods.registry import get_method
from medclip_ad.output_files import SCORES_FILE
from medclip_ad.training.distributed import finish_rank, start_rank_training, train_method_data_parallel
from medclip_ad.training.loop import TrainingRun, TrainingSession
from medclip_ad.training.runs import start_training, train_method

logger = logging.getLogger(__name__)

PathList = str | os.PathLike | Sequence[str | os.PathLike]
BUNDLE_MODELS_README = "models/README.md"


def load_predictor(config: DetectorConfig) -> AnomalyPredictor:
    """The detector; a missing prompt checkpoint is explained (how to get one, or use `ensemble`), not just named.

    The explanation is logged as well as raised: MONAI reports a failed component under its own message.
    """
    if get_method(config.method).trainer and config.prompts and not Path(config.prompts).is_file():
        message = (f"{config.prompts}: no method checkpoint there. Train one (configs/train.json writes it there; "
                   f"or `medclip-ad train`), or convert a reference checkpoint with `medclip-ad import-checkpoint` "
                   f"and pass --prompts PATH, or run --method ensemble, which needs none (see {BUNDLE_MODELS_README})")
        logger.error(message)
        raise UserInputError(message)
    predictor = AnomalyPredictor(config)
    if predictor.random_weights:
        logger.warning(RANDOM_WEIGHTS_WARNING)
    return predictor


def load_manifests(paths: PathList) -> list[Manifest]:
    """Manifests from `medclip-ad prepare-data`, one path or a list of them."""
    manifests = [Manifest.load(path) for path in _paths(paths, "manifests")]
    if not manifests:
        raise UserInputError("manifests: name at least one manifest (--manifests \"['a.json','b.json']\")")
    return manifests


class LoadScan(Transform):
    """A case (a discovered `CaseSource`, or the path of one image, NIfTI file or DICOM series) -> `Scan`.

    Reads with the package's readers (MONAI LoadImage for DICOM series and NIfTI), exactly as `infer` does.
    """

    def __init__(self, volume_index: int | None = None) -> None:
        self.volume_index = volume_index

    def __call__(self, case: CaseSource | str | os.PathLike) -> Scan:
        if not isinstance(case, CaseSource):
            found, _ = discover_cases([Path(case)])
            if len(found) != 1:
                raise UserInputError(f"{case}: holds {len(found)} cases; LoadScan reads one (use CaseInference "
                                     "for folders)")
            case = found[0]
        return read_case(case, volume_index=self.volume_index)


class PredictScan(Inferer):
    """`Scan` -> `{"scan": Scan, "prediction": ScanPrediction}`: the model step, scored as `infer` scores it.

    A MONAI inferer: `inferer(inputs=scan, network=network_def)` slices the scan and runs the network's
    predictor on the normalised slices (`network`: the bundle's `AnomalyMapNetwork`); without a network,
    the predictor given here. Kept apart from `WriteCase`, so a host that brings its own outputs (MONAI
    Deploy) keeps the scoring. A dict, not a tuple: MONAI's Compose would hand a tuple's items to the next
    transform one by one.
    """

    def __init__(self, predictor: AnomalyPredictor, options: CaseOptions = CaseOptions()) -> None:
        self.predictor = predictor
        self.options = options

    def __call__(self, inputs: Scan, network: AnomalyMapNetwork | None = None, *args: Any,
                 **kwargs: Any) -> dict[str, Scan | ScanPrediction]:
        if self.options.dicom_out:
            dicom_source_files(inputs)  # refuse a non-DICOM input before spending model time on it
        predictor = self.predictor if network is None else network.predictor
        return {"scan": inputs, "prediction": predict_scan(predictor, inputs, self.options)}


class WriteCase(Transform):
    """`PredictScan`'s output -> its finished case folder under `output_dir` (the `infer` output contract).

    `predictor` is the one that scored the scan; its provenance goes into scores.json.
    """

    def __init__(self, predictor: AnomalyPredictor, output_dir: str | os.PathLike,
                 options: CaseOptions = CaseOptions()) -> None:
        self.predictor = predictor
        self.output_dir = Path(output_dir)
        self.options = options

    def __call__(self, scored: dict[str, Scan | ScanPrediction]) -> Path:
        scan, prediction = scored["scan"], scored["prediction"]
        write_case(self.predictor, scan, prediction, self.output_dir, self.options)
        logger.info("%s: score %.4f -> %s", scan.name, prediction.score, self.output_dir / scan.name)
        return self.output_dir / scan.name


class CaseInference:
    """Every case under `input_path` through `preprocessing`, `inferer` and `postprocessing`, like `medclip-ad infer`.

    Bad inputs are reported and the rest go on; `run` raises at the end if any failed. `resume` skips cases
    whose folder already exists (for restarting a large or sharded run); otherwise an existing folder is an
    error up front unless `overwrite`. `select` picks this process's share of the cases (sharded runs).
    """

    def __init__(self, input_path: PathList | None, preprocessing: Callable, inferer: Callable,
                 postprocessing: Callable, output_dir: str | os.PathLike, resume: bool = False,
                 overwrite: bool = False, select: Callable[[list], list] | None = None) -> None:
        self.inputs = _paths(input_path, "input_path")
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.select = select or list

    def run(self) -> list[Path]:
        """Write this process's cases; returns their folders."""
        if not self.inputs:
            raise UserInputError("input_path: name a study folder, a file, or a list of them (--input_path PATH)")
        check_output_folder(self.output_dir)
        sources, problems = discover_cases(self.inputs, exclude=[self.output_dir])
        sources, problems = self.select(sources), self.select(problems)
        failures = CaseFailures(self.output_dir)
        for problem in problems:
            logger.error("%s", failures.add(problem))
        pending = [source for source in sources
                   if not (self.resume and case_folder_complete(self.output_dir, source.name))]
        if len(pending) < len(sources):
            logger.info("resuming: %d of %d case(s) already in %s", len(sources) - len(pending), len(sources),
                        self.output_dir)
        for source in pending:
            check_case_folder_free(self.output_dir, source.name, self.overwrite)
        with sigterm_as_interrupt():  # a scheduler's SIGTERM discards the unfinished case, like Ctrl-C
            written = self._run_cases(pending, failures)
        if len(failures.lines) > 1:
            logger.error("%d input(s) failed:", len(failures.lines))
            for line in failures.lines:
                logger.error("%s", line)
        logger.info("%d case(s) written to %s", len(written), self.output_dir)
        if failures.lines:
            raise UserInputError(f"{len(failures.lines)} input(s) failed (the others were written); the first: "
                                 f"{failures.lines[0]}")
        return written


    def _run_cases(self, pending: list[CaseSource], failures: CaseFailures) -> list[Path]:
        written = []
        show_progress = len(pending) > 1 and logger.isEnabledFor(logging.INFO)  # not on quiet (non-zero) ranks
        for source in tqdm(pending, desc="cases", unit="case", disable=not show_progress):
            try:
                folder = self.postprocessing(self.inferer(self.preprocessing(source)))
            except Exception as error:  # one bad case never stops the run; MONAI's Compose wraps what it raised
                logger.error("%s", failures.record(source.location, error))
                continue
            written.append(folder)
            document = json.loads((Path(folder) / SCORES_FILE).read_text(encoding="utf-8"))
            for line in missing_outputs(document, folder):
                logger.error("%s", failures.add(line))
        return written


def run_training(detector: DetectorConfig, manifests: PathList | None, output_dir: str | os.PathLike,
                 training: object | None = None, resume: str | os.PathLike | None = None,
                 data_parallel: bool = False, overwrite: bool = False) -> TrainingRun:
    """`medclip-ad train` for `detector.method` with the recipe `training`, alone or as one torchrun rank."""
    train = train_method_data_parallel if data_parallel else train_method
    loaded = load_manifests(manifests) if manifests else []
    run = train(detector.method, detector, loaded, Path(output_dir), training,
                resume=Path(resume) if resume else None, overwrite=overwrite)
    logger.info("%s: %s (epoch losses: %s)", detector.method, run.final_checkpoint,
                ", ".join(f"{loss:.4f}" for loss in run.epoch_losses))
    return run


def manifests_in(dataset_dir: str | os.PathLike) -> list[Path]:
    """The model zoo's `dataset_dir`: the dataset manifests (`medclip-ad prepare-data` JSON files) in it, by name."""
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise UserInputError(f"dataset_dir {folder}: no such folder; put the manifests `medclip-ad prepare-data` "
                             "writes there, or pass --manifests \"['a.json']\"")
    return sorted(folder.glob("*.json"))


@dataclass
class TrainingData:
    """`train#dataset` as the model zoo names it: `data` is the training manifests (paths), loaded when training
    starts; the method turns their images into its own dataset."""

    data: PathList | None

    def manifests(self) -> list[Manifest]:
        return load_manifests(self.data) if self.data else []


def start_training_run(detector: DetectorConfig, dataset: TrainingData, output_dir: str | os.PathLike,
                       training: object | None = None, resume: str | os.PathLike | None = None,
                       data_parallel: bool = False, overwrite: bool = False,
                       tensorboard: bool = False) -> TrainingSession:
    """The training session `train#trainer` (a MONAI SupervisedTrainer) drives: `medclip-ad train`'s run, alone or
    as one torchrun rank."""
    start = start_rank_training if data_parallel else start_training
    return start(detector.method, detector, dataset.manifests(), Path(output_dir), training,
                 resume=Path(resume) if resume else None, overwrite=overwrite, tensorboard=tensorboard)


def report_training(trainer: Any, data_parallel: bool = False) -> TrainingRun:
    """After `train#trainer.run()`: every rank waits for rank 0's checkpoint; the run's summary is logged."""
    run = finish_rank(trainer.training_run) if data_parallel else trainer.training_run
    logger.info("%s: %s (epoch losses: %s)", trainer.session.provenance.get("method"), run.final_checkpoint,
                ", ".join(f"{loss:.4f}" for loss in run.epoch_losses))
    return run


def run_evaluation(detector: DetectorConfig, manifests: PathList, output_dir: str | os.PathLike,
                   name: str | None = None, overwrite: bool = False,
                   volume_options: CaseOptions = CaseOptions()) -> EvaluationReport:
    """`medclip-ad evaluate`: inputs checked before the model loads, then the report written to `output_dir`.

    `volume_options` slice, window and score the studies of volume manifests, as `infer` would.
    """
    loaded = load_manifests(manifests)
    check_evaluation_inputs(loaded, Path(output_dir), overwrite)
    report = evaluate(load_predictor(detector), loaded, Path(output_dir), name=name, overwrite=overwrite,
                      volume_options=volume_options)
    logger.info("report: %s (metrics beside the published ones), %s", Path(output_dir) / REPORT_FILE,
                Path(output_dir) / RESULTS_FILE)
    return report


def _paths(value: PathList | None, option: str) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    if not all(isinstance(item, (str, os.PathLike)) for item in value):
        raise UserInputError(f"{option}: expected a path or a list of paths, got {value!r}")
    return [Path(item) for item in value]
