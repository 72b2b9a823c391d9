"""`medclip-ad infer`: score images, DICOM series and NIfTI volumes; write one folder per case.

A run with some bad inputs processes the good ones, names every bad one on its own line (as it happens,
and all together at the end), and exits 1; a run where no case could be written exits 2. Whatever a case
raises, the run goes on; tracebacks of unexpected errors go to errors.log in --out. Options, --out and
existing case folders are checked before the model loads; --resume skips the cases already finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from medclip_ad.cli.detector_options import add_detector_arguments, detector_config
from medclip_ad.config import (
    AGGREGATIONS,
    DICOM_OUTPUTS,
    MODALITIES,
    PARAMETRIC_MAP_ENCODINGS,
    PLANE_NORMALS,
    CaseOptions,
)
from medclip_ad.errors import PARTIAL_FAILURE_EXIT, USER_ERROR_EXIT, UserInputError
from medclip_ad.io.intensity import CT_WINDOW_PRESETS

if TYPE_CHECKING:
    from concurrent.futures import Future

    from medclip_ad.inference.calibration import Calibration
    from medclip_ad.inference.case_failures import CaseFailures
    from medclip_ad.inference.predictor import AnomalyPredictor
    from medclip_ad.io.discovery import CaseSource

HELP = "detect anomalies in images (PNG/JPEG/TIFF), DICOM series or files, and NIfTI volumes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="image, DICOM file, DICOM series folder, NIfTI file, or a folder of these")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (one sub-folder per case)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case folders")
    parser.add_argument("--resume", action="store_true",
                        help="skip cases whose folder an earlier run finished (continue an interrupted batch)")
    add_findings_arguments(parser)
    parser.add_argument("--dicomweb-url", metavar="URL",
                        help="send every DICOM output to this DICOMweb server (STOW-RS); needs --dicom-out")
    add_case_arguments(parser)
    add_detector_arguments(parser)


def add_findings_arguments(parser: argparse.ArgumentParser) -> None:
    """The DICOM outputs and the calibration that turns scores into findings (shared with the Deploy app)."""
    parser.add_argument("--dicom-out", choices=DICOM_OUTPUTS,
                        help="also write DICOM for PACS (DICOM inputs only): a Parametric Map of the anomaly map, "
                             "RGB Secondary Capture overlays of the top slices, or both; always a Structured Report "
                             "of the findings, and with --calibration a Segmentation of the lesion mask")
    parser.add_argument("--parametric-map-encoding", choices=PARAMETRIC_MAP_ENCODINGS, default="uint16",
                        help="16-bit integers with a real-world value mapping (PACS render them; default) or float32")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration.json from `medclip-ad calibrate`: flag cases, write lesion masks and "
                             "their components")
    parser.add_argument("--operating-point", metavar="FPR",
                        help="operating point of the calibration, e.g. 5%% (default: its middle one)")


def add_case_arguments(parser: argparse.ArgumentParser, overlays: bool = True) -> None:
    """Options that shape how a scan is sliced, windowed and summarised (shared with the demo and evaluate);
    `overlays` adds the count of top-slice overlays, for commands that write case folders."""
    group = parser.add_argument_group("volumes")
    group.add_argument("--axis", choices=list(PLANE_NORMALS), help="slicing plane (default: the acquisition plane)")
    group.add_argument("--window", type=float, nargs=2, metavar=("WIDTH", "LEVEL"),
                       help="display window for CT values (default: by modality)")
    group.add_argument("--window-preset", choices=list(CT_WINDOW_PRESETS), help="named CT window")
    group.add_argument("--modality", choices=MODALITIES,
                       help="CT: window the values as Hounsfield units; MR/other: percentiles (default: the DICOM "
                            "Modality tag, else CT when the values are Hounsfield units with air at -1000)")
    group.add_argument("--aggregation", choices=AGGREGATIONS, default="max", help="volume score from slice scores")
    group.add_argument("--top-k", type=int, default=5, help="k of topk_mean")
    if overlays:
        group.add_argument("--overlays", type=int, default=CaseOptions.overlay_count,
                           help="overlay PNGs written for the top slices")
    group.add_argument("--volume-index", type=int, help="volume of a 4-D NIfTI to use")


def case_options(args: argparse.Namespace, calibration: Calibration | None = None) -> CaseOptions:
    """The case options the arguments describe, range-checked (CaseOptions refuses what cannot work)."""
    if args.window and args.window_preset:
        raise UserInputError("--window and --window-preset: choose one of them")
    return CaseOptions(axis=args.axis, window=tuple(args.window) if args.window else args.window_preset,
                       modality=args.modality,
                       aggregation=args.aggregation, top_k=args.top_k,
                       overlay_count=getattr(args, "overlays", CaseOptions.overlay_count),
                       overwrite=getattr(args, "overwrite", False),
                       volume_index=args.volume_index, dicom_out=getattr(args, "dicom_out", None),
                       parametric_map_encoding=getattr(args, "parametric_map_encoding", "uint16"),
                       calibration=calibration,
                       operating_point=getattr(args, "operating_point", None))


def run(args: argparse.Namespace) -> int:
    from medclip_ad.inference.case_failures import CaseFailures, print_failure
    from medclip_ad.inference.case_folder import case_folder_complete, check_case_folder_free
    from medclip_ad.inference.worklist import write_results_table
    from medclip_ad.io.discovery import discover_cases
    from medclip_ad.io.writers import check_output_folder

    if args.resume and args.overwrite:
        raise UserInputError("--resume and --overwrite: choose one (resume keeps finished cases, overwrite replaces "
                             "them)")
    if args.dicomweb_url and not args.dicom_out:
        raise UserInputError("--dicomweb-url: sends the DICOM outputs, so it needs --dicom-out")
    if args.operating_point and not args.calibration:
        raise UserInputError("--operating-point: needs --calibration")
    check_output_folder(args.out)
    case_options(args)  # range-checked before anything is read
    config = detector_config(args)
    sender = None
    if args.dicomweb_url:
        from medclip_ad.io.dicomweb import DicomWebClient

        sender = DicomWebClient(args.dicomweb_url)
    calibration = None
    if args.calibration:
        from medclip_ad.inference.calibration import Calibration, case_scoring

        calibration = Calibration.load(args.calibration)
        calibration.operating_point(args.operating_point)  # an unknown one is refused now
    sources, problems = discover_cases(args.inputs, exclude=[args.out])
    failures = CaseFailures(args.out)
    for problem in problems:
        print_failure(failures.add(problem))
    finished: list[tuple[Path, dict]] = []
    if args.resume:
        finished = [_finished_case(args.out / source.name) for source in sources
                    if case_folder_complete(args.out, source.name)]
        sources = [source for source in sources if not case_folder_complete(args.out, source.name)]
        print(f"resuming: {len(finished)} case(s) already finished in {args.out}, {len(sources)} to go")
    for source in sources:
        check_case_folder_free(args.out, source.name, args.overwrite)
    written: list[tuple[Path, dict]] = []
    try:
        if sources:  # torch and the model stack load only now: bad inputs and options fail in a moment
            from medclip_ad.inference.predictor import RANDOM_WEIGHTS_WARNING, AnomalyPredictor

            predictor = AnomalyPredictor(config)
            if predictor.random_weights:
                print(f"WARNING: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr)
            options = case_options(args, calibration)
            if calibration:
                calibration.check_applies(predictor.provenance(), case_scoring(calibration.scoring["kind"], options),
                                          args.calibration)
            infer_sources(predictor, sources, args.out, options, failures, written)
        if written or finished:
            print(f"worklist: {write_results_table(args.out, finished + written)}")
        if sender:
            for folder, _ in written:
                try:
                    sender.store_folder(folder)
                except UserInputError as error:
                    print_failure(failures.add(error))
    finally:
        verdicts = ""
        if calibration:
            flagged = sum(1 for _, document in written if document.get("flagged"))
            verdicts = f", {flagged} flagged at FPR {calibration.operating_point(args.operating_point).name}"
        _summarise(written, failures, args.out, verdicts, several=len(sources) + len(problems) > 1)
    if not failures.lines:
        return 0
    return PARTIAL_FAILURE_EXIT if written else USER_ERROR_EXIT


def _finished_case(folder: Path) -> tuple[Path, dict]:
    """A case folder an earlier run finished, with its scores.json (for the worklist of a resumed run)."""
    import json

    from medclip_ad.output_files import SCORES_FILE

    return folder, json.loads((folder / SCORES_FILE).read_text(encoding="utf-8"))


def _summarise(written: list[tuple[Path, dict]], failures: CaseFailures, out_dir: Path, verdicts: str,
               several: bool) -> None:
    """The closing lines, also after Ctrl-C: what was written, and every failure again in one place."""
    if failures.lines and several:
        print(f"medclip-ad: {len(failures.lines)} input(s) failed:", file=sys.stderr)
        for line in failures.lines:
            print(f"medclip-ad: error: {line}", file=sys.stderr)
    failed = f"; {len(failures.lines)} input(s) failed" if failures.lines else ""
    print(f"{len(written)} case(s) written to {out_dir}{verdicts}{failed}")


def infer_sources(predictor: AnomalyPredictor, sources: list[CaseSource], out_dir: Path, options: CaseOptions,
                  failures: CaseFailures, written: list[tuple[Path, dict]]) -> None:
    """Run each case; a case that fails, whatever it raises, adds its one line to `failures` and the rest go on.

    While the model scores a case, a reader thread reads the next one and a writer thread writes the one
    before (numpy, zlib, PIL and pydicom work that starts no OpenMP team beside the model's: three 64-slice
    NIfTIs ran 1.16x faster, README Performance). Each finished case folder is appended to
    `written` with its scores.json document as it finishes, so an interrupted run still knows them. On
    Ctrl-C or SIGTERM the case being written is finished (its folder appears whole) and the one being
    scored is dropped; no staging folder is ever left, since only the writer thread makes them.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from medclip_ad.inference.case import check_case, predict_scan, resolve_slice_axis, write_case
    from medclip_ad.io.readers import read_case

    def read(source: CaseSource):
        return read_case(source, volume_index=options.volume_index)

    with ThreadPoolExecutor(1, thread_name_prefix="case-reader") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="case-writer") as writer:
        writing = _CaseBeingWritten(out_dir, failures, written)
        reads = [reader.submit(read, sources[0])] if sources else []
        try:
            for number, source in enumerate(tqdm(sources, desc="cases", unit="case", disable=len(sources) < 2)):
                if number + 1 < len(sources):
                    reads.append(reader.submit(read, sources[number + 1]))
                try:
                    scan = reads[number].result()
                    reads[number] = None  # the scan is held only while it is scored and written
                    check_case(scan, out_dir, options)
                    total = scan.array.shape[resolve_slice_axis(scan, options)] if scan.kind == "volume" else 0
                    with tqdm(total=total, desc=scan.name, unit="slice", leave=False, disable=not total) as bar:
                        prediction = predict_scan(predictor, scan, options, progress=bar.update)
                except Exception as error:  # one bad case never stops the run: named on one line
                    _print_case_failure(failures, source, error)
                    continue
                writing.finish()  # at most one case is being written
                writing.start(source, scan.name, writer.submit(write_case, predictor, scan, prediction, out_dir,
                                                                options))
        finally:
            writing.finish()


class _CaseBeingWritten:
    """The case the writer thread is writing: its outcome is recorded once it is done."""

    def __init__(self, out_dir: Path, failures: CaseFailures, written: list[tuple[Path, dict]]) -> None:
        self.out_dir, self.failures, self.written = out_dir, failures, written
        self.pending: tuple[CaseSource, str, Future[dict]] | None = None

    def start(self, source: CaseSource, name: str, future: Future[dict]) -> None:
        self.pending = (source, name, future)

    def finish(self) -> None:
        from medclip_ad.inference.case import missing_outputs
        from medclip_ad.inference.case_failures import print_failure

        if self.pending is None:
            return
        source, name, future = self.pending
        try:
            document = future.result()  # Ctrl-C here leaves it pending: the run's way out waits for it again
        except Exception as error:
            self.pending = None
            _print_case_failure(self.failures, source, error)
            return
        self.pending = None
        self.written.append((self.out_dir / name, document))
        for line in missing_outputs(document, self.out_dir / name):
            print_failure(self.failures.add(line))


def _print_case_failure(failures: CaseFailures, source: CaseSource, error: BaseException) -> None:
    """A failed case's one line (logged in full if unexpected)."""
    from medclip_ad.inference.case_failures import print_failure

    print_failure(failures.record(source.location, error))
