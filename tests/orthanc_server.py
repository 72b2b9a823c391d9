"""A throw-away Orthanc with its DICOMweb plugin, for round-trip tests.

Own configuration, index and storage in a temporary folder, a free HTTP port, no DICOM (DIMSE) server,
and remote access refused (Orthanc 1.10 has no HTTP bind-address option, so this is what keeps it to
this machine's loopback clients); stopped when the context ends.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests

from server_process import stop_process

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_SECONDS = 60.0


def available() -> bool:
    return shutil.which("Orthanc") is not None and DICOMWEB_PLUGIN.is_file()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def orthanc(folder: Path) -> Iterator[str]:
    """Start Orthanc; yield its REST root URL (DICOMweb under `<url>/dicom-web`)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = {"Name": "medclip-ad-test", "StorageDirectory": str(folder / "storage"),
              "IndexDirectory": str(folder / "index"), "HttpPort": port, "DicomServerEnabled": False,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
              "ExecuteLuaEnabled": False, "WebDavEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if requests.get(f"{url}/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text(errors='replace')}")
            time.sleep(0.2)
        yield url
    finally:
        stop_process(process)
        log.close()
