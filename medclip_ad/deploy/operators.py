"""The Deploy app's own operators: selected series -> `Scan`, `Scan` -> scored case, scored case -> DICOM outputs.

They sit between the SDK's DICOMDataLoaderOperator and DICOMSeriesSelectorOperator (DICOM in) and the
output folder, following the SDK's pattern: only the writer touches the output folder, and the scoring
operator does no file I/O at all. A series goes through the package's own reader (the files the SDK's
loader found), scoring and writers, so a study gives the same scores and DICOM objects here as with
`medclip-ad infer --dicom-out`. One series that cannot be read or scored is reported and the others
go on; the app then fails at the end, naming every one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from medclip_ad.bundle.entrypoints import PredictScan, load_predictor
from medclip_ad.config import CaseOptions, DetectorConfig
from medclip_ad.errors import UserInputError
from medclip_ad.inference.case import ScanPrediction, write_case
from medclip_ad.inference.predictor import AnomalyPredictor
from medclip_ad.io.discovery import CaseSource, safe_name
from medclip_ad.io.readers import read_case
from medclip_ad.io.scan import Scan

logger = logging.getLogger(__name__)

# Port names, as the SDK's own operators name what they pass on.
SELECTED_SERIES = "study_selected_series_list"
SCANS = "scans"
SCORED = "scored_cases"


class SeriesFailed(UserInputError):
    """Some selected series could not be read, scored or written; `written` is how many cases were."""

    def __init__(self, failures: list[str], written: int) -> None:
        super().__init__(f"{len(failures)} series failed ({written} written): " + "; ".join(failures))
        self.written = written


@dataclass
class SeriesScans:
    """The scans of the selected series, and one line for each series that could not be read."""

    scans: list[Scan]
    failures: list[str]


@dataclass
class ScoredCases:
    """Scored scans with the detector that scored them (its provenance goes into every output)."""

    predictor: AnomalyPredictor | None
    cases: list[tuple[Scan, ScanPrediction]]
    failures: list[str]


class SeriesToScanOperator(Operator):
    """`study_selected_series_list` (DICOMSeriesSelectorOperator) -> `scans`: each selected series as a `Scan`.

    Reads the series' files (those the SDK's loader found under `input_folder`, which they must lie in)
    with the package's reader, so slice order, geometry and intensity follow the same rules as `infer`.
    """

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs) -> None:
        self.input_folder = Path(input_folder).resolve()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(SELECTED_SERIES)
        spec.output(SCANS)

    def compute(self, op_input, op_output, context) -> None:
        scans, failures = [], []
        for study in op_input.receive(SELECTED_SERIES) or []:
            for selected in study.selected_series:
                try:
                    scans.append(read_case(self.case_source(selected.series)))
                except UserInputError as error:
                    failures.append(str(error))
                    logger.error("%s", error)
        op_output.emit(SeriesScans(scans, failures), SCANS)

    def case_source(self, series) -> CaseSource:
        """The series as the reader takes it; its case is named by its SeriesInstanceUID (unique in PACS)."""
        paths = []
        for instance in series.get_sop_instances():
            path = Path(instance.get_native_sop_instance().filename).resolve()
            if not path.is_relative_to(self.input_folder):
                raise UserInputError(f"{path}: lies outside the input folder {self.input_folder} (a link?); "
                                     "series not read")
            paths.append(path)
        uid = str(series.SeriesInstanceUID)
        return CaseSource(safe_name(uid), "dicom", tuple(sorted(paths)), self.input_folder, uid)


class AnomalyScoringOperator(Operator):
    """`scans` -> `scored_cases`: every scan scored as `infer` scores it (the bundle's `PredictScan` inferer).

    The detector loads once, when the app starts; no file is read or written here.
    """

    def __init__(self, fragment: Fragment, *args, detector: DetectorConfig, options: CaseOptions, **kwargs) -> None:
        self.detector = detector
        self.options = options
        self.inferer: PredictScan | None = None
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(SCANS)
        spec.output(SCORED)

    def start(self) -> None:
        predictor = load_predictor(self.detector)
        calibration = self.options.calibration
        if calibration is not None:  # refused, as by `infer`, when made with another model or scoring
            from medclip_ad.inference.calibration import case_scoring

            calibration.check_applies(predictor.provenance(), case_scoring(calibration.scoring["kind"], self.options),
                                      "calibration")
        self.inferer = PredictScan(predictor, self.options)

    def compute(self, op_input, op_output, context) -> None:
        received: SeriesScans = op_input.receive(SCANS)
        cases, failures = [], list(received.failures)
        for scan in received.scans:
            try:
                scored = self.inferer(scan)
            except UserInputError as error:
                failures.append(str(error))
                logger.error("%s", error)
                continue
            cases.append((scan, scored["prediction"]))
            logger.info("%s: score %.4f", scan.name, scored["prediction"].score)
        op_output.emit(ScoredCases(self.inferer.predictor, cases, failures), SCORED)


class DicomOutputsOperator(Operator):
    """`scored_cases` -> one case folder per series under `output_folder`, as `infer --dicom-out` writes it.

    The DICOM objects for PACS (Parametric Map, Secondary Capture overlays, the findings SR and, with a
    calibration, the lesion Segmentation) beside scores.json and the NIfTI map. Raises at the end when any
    series failed, so the app's exit status says so.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, options: CaseOptions, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        self.options = options
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(SCORED)

    def compute(self, op_input, op_output, context) -> None:
        received: ScoredCases = op_input.receive(SCORED)
        failures, written = list(received.failures), 0
        self.output_folder.mkdir(parents=True, exist_ok=True)
        for scan, prediction in received.cases:
            try:
                write_case(received.predictor, scan, prediction, self.output_folder, self.options)
            except UserInputError as error:
                failures.append(str(error))
                logger.error("%s", error)
                continue
            written += 1
            logger.info("%s: written to %s", scan.name, self.output_folder / scan.name)
        if failures:
            raise SeriesFailed(failures, written)
