"""`medclip-ad download-weights` and where `--clip-weights openai` looks, against a local HTTP server.

Nothing is downloaded from the internet: the server on 127.0.0.1 serves a small file, and the release
table entry is swapped for one whose URL points at it (with the small file's sha256 in its path, as
OpenAI's URLs carry theirs).
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from medclip_ad.cli.main import main
from medclip_ad.errors import UserInputError
from medclip_ad.modeling import weights_download
from medclip_ad.modeling.weights_download import OfficialRelease, cached_path, official_release

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, more than one read chunk
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = "ViT-L-14-336px.pt"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                   "NO_PROXY")


class _Server:
    """A one-file HTTP server on 127.0.0.1 that also answers as a forward proxy, recording request paths."""

    def __init__(self) -> None:
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                requests.append(self.path)
                if not self.path.endswith(f"/{FILENAME}"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, sha256: str, host: str | None = None) -> str:
        return f"http://{host or f'127.0.0.1:{self.port}'}/clip/models/{sha256}/{FILENAME}"


@pytest.fixture()
def server(monkeypatch, tmp_path):
    for name in PROXY_VARIABLES + weights_download.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(weights_download.CACHE_ENV, str(tmp_path / "cache"))
    serving = _Server()
    serving.thread.start()
    yield serving
    serving.httpd.shutdown()
    serving.httpd.server_close()


def _serve_release(monkeypatch, release: OfficialRelease) -> None:
    monkeypatch.setattr(weights_download, "official_release", lambda model_name: release)


def test_the_published_release_states_its_sha256_in_its_official_url():
    release = official_release("ViT-L-14-336")
    assert release.sha256 == "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"
    assert release.url.endswith(f"/{release.sha256}/ViT-L-14-336px.pt") and release.url.startswith("https://")
    with pytest.raises(UserInputError, match="no official OpenAI URL"):
        official_release("no-such-model")


def test_download_verifies_caches_and_is_not_repeated(server, monkeypatch, capsys):
    release = OfficialRelease("ViT-L-14-336", server.url(PAYLOAD_SHA256), PAYLOAD_SHA256)
    _serve_release(monkeypatch, release)
    assert main(["download-weights"]) == 0
    assert cached_path(release).read_bytes() == PAYLOAD
    assert f"verified sha256 {PAYLOAD_SHA256}" in capsys.readouterr().out
    assert main(["download-weights"]) == 0
    assert "already cached" in capsys.readouterr().out and len(server.requests) == 1


def test_a_file_whose_sha256_differs_is_refused_and_nothing_is_kept(server, monkeypatch, capsys):
    published = "0" * 64
    _serve_release(monkeypatch, OfficialRelease("ViT-L-14-336", server.url(published), published))
    assert main(["download-weights"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("medclip-ad: error:")]
    assert len(errors) == 1 and f"sha256 {PAYLOAD_SHA256} is not the published {published}" in errors[0]
    assert not any(Path(weights_download.cache_dir()).rglob("*.pt*"))


def test_a_mirror_url_is_checked_against_the_official_digest(server, monkeypatch):
    official = OfficialRelease("ViT-L-14-336", f"https://unreachable.invalid/{PAYLOAD_SHA256}/{FILENAME}",
                               PAYLOAD_SHA256)
    _serve_release(monkeypatch, official)
    assert main(["download-weights", "--url", server.url("mirror")]) == 0
    assert cached_path(official).read_bytes() == PAYLOAD


def test_downloads_go_through_the_configured_proxy(server, monkeypatch):
    release = OfficialRelease("ViT-L-14-336", server.url(PAYLOAD_SHA256, host="weights.invalid"), PAYLOAD_SHA256)
    _serve_release(monkeypatch, release)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.port}")
    assert main(["download-weights"]) == 0
    assert server.requests == [release.url]  # a forward proxy sees the absolute URL


def test_offline_mode_never_touches_the_network(server, monkeypatch, capsys):
    _serve_release(monkeypatch, OfficialRelease("ViT-L-14-336", server.url(PAYLOAD_SHA256), PAYLOAD_SHA256))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download-weights"]) == 2
    assert "offline mode" in capsys.readouterr().err and server.requests == []


def test_clip_weights_openai_uses_the_verified_cache_before_any_download(server, monkeypatch):
    release = OfficialRelease("ViT-L-14-336", server.url(PAYLOAD_SHA256), PAYLOAD_SHA256)
    _serve_release(monkeypatch, release)
    monkeypatch.setattr(weights_download, "_hub_cached", lambda config: None)
    monkeypatch.setenv("MEDCLIP_AD_OFFLINE", "1")
    with pytest.raises(UserInputError, match="download-weights --model ViT-L-14-336"):
        weights_download.release_weights_file("ViT-L-14-336", {"hf_hub": "some/repo/"})
    cached_path(release).parent.mkdir(parents=True)
    cached_path(release).write_bytes(PAYLOAD)
    assert weights_download.release_weights_file("ViT-L-14-336", {"hf_hub": "some/repo/"}) == str(cached_path(release))
    assert server.requests == []
