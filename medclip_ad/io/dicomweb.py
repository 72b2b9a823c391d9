"""DICOMweb: send a case's DICOM outputs to a PACS (STOW-RS) and fetch a study to score (WADO-RS).

Transient failures (the server unreachable, busy, or timing out) are retried with exponential back-off;
a refusal (any other HTTP error, or instances the server reports as failed) is one line naming the
server and what it said. Fetched files are named by their UIDs after checking those are UIDs, so a
server cannot choose paths on this machine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar

import pydicom

from medclip_ad.errors import UserInputError
from medclip_ad.io.writers import atomic_write

Result = TypeVar("Result")

RETRIES: int = 3  # attempts after the first
BACKOFF_SECONDS: float = 0.5  # doubled after each failed attempt
TIMEOUT_SECONDS: float = 60.0
RETRIABLE_STATUS: frozenset[int] = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS,
                                              HTTPStatus.BAD_GATEWAY, HTTPStatus.SERVICE_UNAVAILABLE,
                                              HTTPStatus.GATEWAY_TIMEOUT})
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_LENGTH = 64


class DicomWebClient:
    """One DICOMweb server, as the CLI uses it."""

    def __init__(self, url: str, retries: int = RETRIES, backoff_seconds: float = BACKOFF_SECONDS) -> None:
        if not re.match(r"https?://[^/\s]+", url):
            raise UserInputError(f"--dicomweb-url {url}: give an http:// or https:// URL of a DICOMweb service")
        try:  # the optional `dicomweb` extra
            from dicomweb_client import DICOMwebClient
        except ImportError as exc:
            raise UserInputError("--dicomweb-url needs the DICOMweb client: "
                                 "pip install 'medclip-ad[dicomweb]'") from exc
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._client = DICOMwebClient(self.url, timeout=TIMEOUT_SECONDS)
        self._client.set_http_retry_params(retry=False)  # one retry policy: ours, which also covers connections

    def store_folder(self, folder: Path) -> int:
        """Send every DICOM file of a case folder (STOW-RS, one request per study); returns how many."""
        paths = sorted(Path(folder).rglob("*.dcm"))
        datasets = [pydicom.dcmread(path) for path in paths]
        for study in sorted({str(ds.StudyInstanceUID) for ds in datasets}):
            batch = [ds for ds in datasets if str(ds.StudyInstanceUID) == study]
            response = self._with_retries(lambda: self._client.store_instances(batch, study_instance_uid=study),
                                          f"storing {len(batch)} instance(s) of {folder}")
            failed = response.get("FailedSOPSequence") if response is not None else None
            if failed:
                reasons = ", ".join(str(item.get("FailureReason", "?")) for item in failed)
                raise UserInputError(f"{self.url}: refused {len(failed)} of {len(batch)} instance(s) of {folder} "
                                     f"(failure reasons {reasons})")
        return len(datasets)

    def pull_study(self, study_uid: str, out_dir: Path) -> list[Path]:
        """Fetch a study (WADO-RS) into `out_dir/<study>/<series>/<instance>.dcm`; returns the files."""
        _check_uid(study_uid, "--study")
        datasets = self._with_retries(lambda: self._client.retrieve_study(study_uid), f"fetching study {study_uid}")
        if not datasets:
            raise UserInputError(f"{self.url}: study {study_uid} has no instances on this server")
        written = []
        for ds in datasets:
            series = _check_uid(str(ds.get("SeriesInstanceUID", "")), "a fetched SeriesInstanceUID")
            instance = _check_uid(str(ds.get("SOPInstanceUID", "")), "a fetched SOPInstanceUID")
            path = Path(out_dir) / study_uid / series / f"{instance}.dcm"
            with atomic_write(path) as temporary:
                ds.save_as(temporary, enforce_file_format=True)
            written.append(path)
        return written

    def _with_retries(self, action: Callable[[], Result], what: str) -> Result:
        import requests  # installed with dicomweb-client

        for attempt in range(self.retries + 1):
            try:
                return action()
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status not in RETRIABLE_STATUS or attempt == self.retries:
                    detail = exc.response.reason if exc.response is not None else str(exc)
                    raise UserInputError(f"{self.url}: {what} was refused (HTTP {status} {detail})") from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise UserInputError(f"{self.url}: {what} failed after {self.retries + 1} attempts "
                                         f"({type(exc).__name__}: the server is unreachable or not answering)") from exc
            time.sleep(self.backoff_seconds * 2 ** attempt)
        raise AssertionError("unreachable")


def _check_uid(value: str, what: str) -> str:
    if not (_UID.fullmatch(value) and len(value) <= _UID_LENGTH):
        raise UserInputError(f"{what} {value!r}: not a DICOM UID (digits and dots, at most 64 characters)")
    return value
