"""The detector behind the viewer's "Run inference": settings to a config, one loaded model per config,
and a case scored by the same `run_case` as `medclip-ad infer`, so the viewer's results are the CLI's.

Loading CLIP takes seconds to minutes, so the predictor is shared by all sessions and reruns, keyed by
the whole config; results land in the session's folder as ordinary case folders. Scoring runs in a
background thread (`InferenceJob`), so the page keeps answering while it runs. torch, open_clip and MONAI
are imported only here, when inference is asked for: opening and reading cases never loads them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from medclip_ad.config import PLANE_NORMALS, CaseOptions, DetectorConfig
from medclip_ad.constants import DEFAULT_LAYERS
from medclip_ad.errors import UserInputError
from medclip_ad.io.scan import Scan
from medclip_ad.methods import CHECKPOINT_FREE_METHOD
from medclip_ad.methods.registry import METHOD_NAMES, checkpoint_method
from medclip_ad.random_weights import is_random_weights

from medclip_viewer.cases import CaseResult, load_result

if TYPE_CHECKING:
    from medclip_ad.inference.predictor import AnomalyPredictor

# "auto" picks the method the product recommends: the checkpoint's own method when one is given (learned
# prompts for a reference file), else the training-free one.
METHOD_AUTO = "auto"
METHOD_CHOICES: tuple[str, ...] = (METHOD_AUTO, *METHOD_NAMES)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
ACQUISITION_PLANE = "acquisition plane"
SCORED_PLANES: tuple[str, ...] = (ACQUISITION_PLANE, *PLANE_NORMALS)
# How many loaded models are kept; each is a full CLIP in memory.
MAX_LOADED_MODELS = 2


def detector_config(clip_weights: str, prompts: str, method: str, device: str, image_size: int,
                    layers: tuple[int, ...] = DEFAULT_LAYERS) -> DetectorConfig:
    """The sidebar's choices as a config; `auto` means the checkpoint's method with one, ensemble without."""
    prompt_path = prompts.strip() or None
    if method == METHOD_AUTO:
        method = checkpoint_method(prompt_path) if prompt_path else CHECKPOINT_FREE_METHOD
    return DetectorConfig(clip_weights=clip_weights.strip(), prompts=prompt_path, method=method,
                          image_size=int(image_size), device=device, layers=tuple(layers))


def parse_layers(text: str) -> tuple[int, ...]:
    """Layers typed as block numbers ("24", "6 12 18 24" or "6, 12"); anything else is refused in one line."""
    words = text.replace(",", " ").split()
    if not words or not all(word.isdigit() and int(word) > 0 for word in words):
        raise UserInputError(f"Layers {text!r}: give block numbers from 1, e.g. 24 or 6 12 18 24")
    return tuple(int(word) for word in words)


def uses_random_weights(config: DetectorConfig) -> bool:
    """Whether a config asks for the random test CLIP, whose outputs must be flagged everywhere."""
    return is_random_weights(config.clip_weights)


_predictors: OrderedDict[DetectorConfig, AnomalyPredictor] = OrderedDict()
_predictors_lock = threading.Lock()


def cached_predictor(config: DetectorConfig) -> AnomalyPredictor:
    """One predictor per config for the whole server: text features are computed once, reruns reuse it.
    Loading holds the lock, so two sessions asking for the same model load it once."""
    from medclip_ad.inference.predictor import AnomalyPredictor

    with _predictors_lock:
        if config not in _predictors:
            _predictors[config] = AnomalyPredictor(config)
            while len(_predictors) > MAX_LOADED_MODELS:
                _predictors.popitem(last=False)
        _predictors.move_to_end(config)
        return _predictors[config]


def scoring_options(plane: str, aggregation: str, top_k: int) -> CaseOptions:
    """The sidebar's volume scoring choices; `ACQUISITION_PLANE` scores along the plane the scan was taken in."""
    return CaseOptions(axis=None if plane == ACQUISITION_PLANE else plane, aggregation=aggregation, top_k=int(top_k))


def result_key(case_key: str, config: DetectorConfig, options: CaseOptions) -> str:
    """Identity of a case scored by a model with given scoring options: results are cached under it."""
    return f"{case_key}|{config!r}|{options!r}"


def run_inference(predictor: AnomalyPredictor, scan: Scan, results_root: Path, key: str, options: CaseOptions,
                  report: Callable[[float, str], None]) -> CaseResult:
    """Score `scan` into its own case folder under `results_root`, calling `report(fraction, text)` as
    slices finish; returns the result as if opened from disk."""
    from medclip_ad.inference.case import resolve_slice_axis, run_case

    out_dir = results_root / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    options = replace(options, overwrite=True)
    total = scan.array.shape[resolve_slice_axis(scan, options)] if scan.kind == "volume" else 1
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        report(done / total, f"{done} of {total} slices scored")

    report(0.0, f"scoring {total} slice{'s' if total > 1 else ''}")
    run_case(predictor, model_input(scan), out_dir, options, progress=advance)
    report(1.0, "done")
    return load_result(out_dir / scan.name)


def model_input(scan: Scan) -> Scan:
    """The scan as the readers hand it to inference: a volume kept in its stored integer type by the case
    cache becomes float32 again (a copy; the shared one stays compact)."""
    if scan.kind != "volume" or scan.array.dtype == np.float32:
        return scan
    return replace(scan, array=scan.array.astype(np.float32))


JobState = Literal["loading", "scoring", "done", "failed"]


@dataclass
class InferenceJob:
    """One "Run inference" scoring in the background: its state and progress are read by the page (which
    polls it) while the thread writes them; `result` or `error` is set once it ends."""

    key: str
    case_key: str
    state: JobState = "loading"
    fraction: float = 0.0
    text: str = "loading the model"
    result: CaseResult | None = None
    error: str = ""
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state in ("loading", "scoring")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the job ends (tests and shutdown); True when it has."""
        return self._finished.wait(timeout_s)

    def report(self, fraction: float, text: str) -> None:
        self.state, self.fraction, self.text = "scoring", min(max(fraction, 0.0), 1.0), text

    def finish(self, result: CaseResult | None, error: str = "") -> None:
        self.result, self.error = result, error
        self.state = "done" if result is not None else "failed"
        self._finished.set()


def start_inference(key: str, case_key: str, config: DetectorConfig, scan: Scan, results_root: Path,
                    options: CaseOptions, load: Callable[[DetectorConfig], AnomalyPredictor] = cached_predictor
                    ) -> InferenceJob:
    """Score `scan` in a background thread; the returned job tells how far it is and what came out.
    A user's mistake (bad weights, a checkpoint that does not fit) ends the job as failed with its line;
    anything else too, with the exception's name, so a job never stays running after its thread died."""
    job = InferenceJob(key, case_key)

    def work() -> None:
        try:
            predictor = load(config)
            job.report(0.0, "model loaded")
            job.finish(run_inference(predictor, scan, results_root, key, options, job.report))
        except UserInputError as error:
            job.finish(None, str(error))
        except Exception as error:  # noqa: BLE001 - the page must learn that the job ended
            job.finish(None, f"{type(error).__name__}: {error}")

    threading.Thread(target=work, name=f"medclip-viewer-inference-{key[:24]}", daemon=True).start()
    return job
