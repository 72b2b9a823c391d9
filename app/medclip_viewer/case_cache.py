"""Opened cases shared by every session of the server: a reader's second browser tab, a colleague opening
the same worklist, or the next case of the worklist (read ahead in the background while the reader looks
at this one) gets the scan, its map and their display files already made.

Volumes are kept in their stored integer type when their values are whole numbers that fit one (a CT in
HU: int16, half the float32 the reader returns); the model converts to float32 where it reads them
(`model.run_inference`).

Entries are keyed by the case folder and the version (st_mtime_ns and size) of its scores.json, its map
and the scanned input, so a rerun of `medclip-ad infer` into the same folder is read afresh. The arrays
are shared read-only between sessions; nothing in the viewer writes into them. The cache is a plain
lock-guarded table rather than a Streamlit cache, so the read-ahead thread (which has no script run)
fills the same entries the page reads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from medclip_ad.io.scan import Scan

from medclip_viewer.cases import SCORES_FILE, CaseResult, load_map, load_result, open_result
from medclip_viewer.confinement import Scope

# A 256x256x120 int16 scan with its float32 map is about 45 MB in memory.
MAX_CACHED_CASES = 8
# The integer types a volume is kept in when its values fit one exactly, smallest first.
STORED_INTEGER_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32)
# The read-ahead thread runs at the lowest CPU priority, so it never slows the page or the browser drawing
# on the same machine (Linux niceness is per thread).
READ_AHEAD_NICENESS = 19

Value = TypeVar("Value")


def file_version(path: Path) -> tuple[int, int]:
    """What tells a changed file from an unchanged one without reading it: (st_mtime_ns, size)."""
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


class SharedTable(Generic[Value]):
    """A small LRU table of values made once per key for the whole server. A key asked for while another
    thread is making it waits for that value instead of making it twice; a failure is not kept."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[Hashable, Future] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def get(self, key: Hashable, make: Callable[[], Value]) -> Value:
        with self._lock:
            pending = self._entries.get(key)
            owner = pending is None
            if owner:
                pending = self._entries[key] = Future()
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
        if not owner:
            return pending.result()
        try:
            pending.set_result(make())
        except BaseException as error:
            with self._lock:
                if self._entries.get(key) is pending:
                    del self._entries[key]
            pending.set_exception(error)
        return pending.result()

    def peek(self, key: Hashable) -> Value | None:
        """The value when it is made already (None while it is being made, failed, or never asked for)."""
        with self._lock:
            pending = self._entries.get(key)
        if pending is None or not pending.done() or pending.exception() is not None:
            return None
        return pending.result()

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class OpenedCase:
    """A finished case as the viewer shows it: the scan it was computed from and its result."""

    scan: Scan
    result: CaseResult


_cases: SharedTable[OpenedCase] = SharedTable(MAX_CACHED_CASES)
_maps: SharedTable[np.ndarray] = SharedTable(MAX_CACHED_CASES)
_map_percentiles: SharedTable[float | None] = SharedTable(4 * MAX_CACHED_CASES)


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READ_AHEAD_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: read ahead at normal priority
        pass


_read_ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medclip-viewer-read-ahead",
                                 initializer=_lower_priority)
_read_ahead_hooks: list[Callable[[tuple, OpenedCase], None]] = []


def case_key(folder: Path, scope: Scope) -> tuple:
    """The cache key of a case folder: where it is, what it may read, and the versions of its files."""
    result = load_result(folder, scope)
    scanned = Path(result.document["input"])
    scanned = scanned if scanned.is_absolute() else folder / scanned
    return (str(folder.resolve()), scope, file_version(folder / SCORES_FILE), file_version(result.map_path),
            file_version(scanned))


def open_result_shared(folder: Path, scope: Scope) -> tuple[Scan, CaseResult]:
    """`open_result`, read once per folder, scope and version for the whole server (the volume in its
    stored integer type: `in_stored_type`)."""
    def opened_case() -> OpenedCase:
        scan, result = open_result(folder, scope)
        return OpenedCase(in_stored_type(scan), result)

    opened = _cases.get(case_key(folder, scope), opened_case)
    return opened.scan, opened.result


def in_stored_type(scan: Scan) -> Scan:
    """The scan with a float volume held in the smallest integer type that holds every value exactly (the
    type a CT or an integer MR is stored in), else unchanged; NaN or Inf keep it float."""
    array = scan.array
    if scan.kind != "volume" or not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return scan
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)) or not np.array_equal(array, np.round(array)):
        return scan
    for integer_type in STORED_INTEGER_TYPES:
        limits = np.iinfo(integer_type)
        if limits.min <= low and high <= limits.max:
            return replace(scan, array=array.astype(integer_type))
    return scan


def load_map_shared(result: CaseResult, scan: Scan) -> np.ndarray:
    """`load_map`, read once per map file and version for the whole server."""
    path = result.map_path
    return _maps.get((str(path.resolve()), file_version(path), scan.array.shape), lambda: load_map(result, scan))


def map_percentile_shared(result: CaseResult, scan: Scan, percentile: float) -> float | None:
    """A percentile of the map (None for an empty one), once per map file and version for the whole server:
    it partitions the whole map (about 0.1 s for 256x256x120), which every new session would otherwise
    redo before its first image."""
    path = result.map_path

    def compute() -> float | None:
        anomaly_map = load_map_shared(result, scan)
        return float(np.percentile(anomaly_map, percentile)) if anomaly_map.size else None

    return _map_percentiles.get((str(path.resolve()), file_version(path), scan.array.shape, float(percentile)), compute)


def on_read_ahead(hook: Callable[[tuple, OpenedCase], None]) -> None:
    """Also run `hook(case_key, opened)` on every case read ahead (e.g. to write its display files)."""
    if hook not in _read_ahead_hooks:
        _read_ahead_hooks.append(hook)


def read_ahead(folder: Path, scope: Scope) -> Future:
    """Open a case in the background (the worklist's next one), so moving to it finds it ready."""
    return _read_ahead.submit(_open_quietly, folder, scope)


def read_ahead_settled() -> None:
    """Wait until every case asked for so far is read ahead (the queue runs in order on one thread)."""
    _read_ahead.submit(lambda: None).result()


def _open_quietly(folder: Path, scope: Scope) -> bool:
    """Read ahead; a case that cannot be opened is reported when the reader opens it, not here."""
    try:
        scan, result = open_result_shared(folder, scope)
        load_map_shared(result, scan)
        key = case_key(folder, scope)
        for hook in _read_ahead_hooks:
            hook(key, OpenedCase(scan, result))
    except Exception:  # noqa: BLE001 - the page opens it again and shows the error then
        return False
    return True
