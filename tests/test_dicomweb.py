"""DICOMweb client behaviour without a PACS: transient failures are retried, refusals and unreachable
servers end in one line, and a server cannot choose where fetched files go."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from medclip_ad.errors import UserInputError
from medclip_ad.io.dicomweb import DicomWebClient


class _Busy(BaseHTTPRequestHandler):
    """503 for the first `busy` requests, then 400: a server that is busy, then refuses."""

    busy = 2
    seen = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).seen += 1
        self.send_response(503 if type(self).seen <= type(self).busy else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def busy_server():
    _Busy.seen = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()


def test_busy_answers_are_retried_then_a_refusal_is_one_line(busy_server, tmp_path) -> None:
    client = DicomWebClient(busy_server, retries=3, backoff_seconds=0.01)
    with pytest.raises(UserInputError, match=r"fetching study 1\.2\.3 was refused \(HTTP 400"):
        client.pull_study("1.2.3", tmp_path)
    assert _Busy.seen == 3  # two 503s retried, the 400 not
    assert not any(tmp_path.iterdir())


def test_an_unreachable_server_fails_after_its_attempts(tmp_path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = DicomWebClient(f"http://127.0.0.1:{port}/dicom-web", retries=1, backoff_seconds=0.01)
    with pytest.raises(UserInputError, match="failed after 2 attempts"):
        client.pull_study("1.2.3", tmp_path)


@pytest.mark.parametrize("url", ["ftp://pacs/dicom-web", "pacs:8042", ""])
def test_only_http_urls_are_taken(url) -> None:
    with pytest.raises(UserInputError, match="--dicomweb-url"):
        DicomWebClient(url)


@pytest.mark.parametrize("uid", ["../../etc", "1.2.3/../x", "1." * 40 + "1", "abc"])
def test_a_study_uid_must_be_a_uid(uid, tmp_path) -> None:
    with pytest.raises(UserInputError, match="not a DICOM UID"):
        DicomWebClient("http://127.0.0.1:9/dicom-web").pull_study(uid, tmp_path)
