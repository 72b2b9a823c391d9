"""OpenAI's CLIP releases on disk: downloaded once, sha256-verified, kept in a cache.

OpenAI publishes each release at a URL whose folder name is the file's sha256 (open_clip's pretrained
table carries those URLs), so the digest to check comes with the address. `medclip-ad download-weights`
streams the file, hashes it on the way, and moves it into the cache only when the digest matches: a
file in the cache is a verified file.

Where `--clip-weights openai` looks, in order: this cache; open_clip's own (Hugging Face hub) cache; and
only then the network, through open_clip and the hub, which honours HF_ENDPOINT (a mirror), the proxy
variables and HF_HUB_OFFLINE. Offline mode (HF_HUB_OFFLINE=1 or MEDCLIP_AD_OFFLINE=1) never touches the
network and says what to do instead. Downloads from a URL honour http_proxy/https_proxy/no_proxy.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medclip_ad.errors import UserInputError
from medclip_ad.io.atomic import atomic_write

CACHE_ENV = "MEDCLIP_AD_CACHE"
OFFLINE_ENVS: tuple[str, ...] = ("MEDCLIP_AD_OFFLINE", "HF_HUB_OFFLINE")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class OfficialRelease:
    """One OpenAI release: its official URL and the sha256 that URL states."""

    model_name: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


def official_release(model_name: str) -> OfficialRelease:
    """The OpenAI release of an open_clip model name (e.g. ViT-L-14-336), from open_clip's table."""
    import open_clip

    config = open_clip.pretrained.get_pretrained_cfg(model_name, "openai")
    url = (config or {}).get("url", "")
    digest = url.rsplit("/", 2)[-2] if url.count("/") >= 2 else ""
    if not _SHA256.fullmatch(digest):
        raise UserInputError(f"openai:{model_name}: open_clip lists no official OpenAI URL with a sha256 for it")
    return OfficialRelease(model_name, url, digest)


def cache_dir() -> Path:
    """MEDCLIP_AD_CACHE, else $XDG_CACHE_HOME/medclip-ad, else ~/.cache/medclip-ad; weights in its weights/."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medclip-ad"
    return Path(root).expanduser() / "weights"


def cached_path(release: OfficialRelease) -> Path:
    """Where a verified copy lives: under its own sha256, so two releases never share a name."""
    return cache_dir() / release.sha256 / release.filename


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in OFFLINE_ENVS)


def download_release(release: OfficialRelease, url: str | None = None,
                     progress: Callable[[int], None] | None = None) -> Path:
    """Fetch a release into the cache (from `url`, a mirror of the official file, if given) and verify it.

    An interrupted or mismatching download leaves nothing in the cache.
    """
    target = cached_path(release)
    if target.is_file():
        return target
    source = url or release.url
    if offline():
        raise UserInputError(f"{source}: offline mode ({' or '.join(OFFLINE_ENVS)} is set); copy the file to "
                             f"{target} or pass --clip-weights PATH")
    digest = hashlib.sha256()
    try:
        with atomic_write(target) as partial:
            opener = urllib.request.build_opener()  # built now, so it reads the proxy variables as they are now
            with opener.open(source, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            if digest.hexdigest() != release.sha256:
                raise UserInputError(f"{source}: sha256 {digest.hexdigest()} is not the published "
                                     f"{release.sha256}; nothing was kept")
    except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors; ValueError: a malformed URL
        raise UserInputError(f"{source}: download failed ({error})") from error
    return target


def release_weights_file(model_name: str, config: dict) -> str:
    """A local file of an OpenAI release for `--clip-weights openai`: from a cache, else downloaded via the hub."""
    try:
        verified = cached_path(official_release(model_name))
    except UserInputError:
        verified = None
    if verified is not None and verified.is_file():
        return str(verified)
    hub_copy = _hub_cached(config)
    if hub_copy is not None:
        return hub_copy
    advice = f"run `medclip-ad download-weights --model {model_name}` or pass a local file with --clip-weights PATH"
    if offline():
        raise UserInputError(f"openai:{model_name}: the weights are in no cache and offline mode is on; {advice}")
    import open_clip

    try:
        return open_clip.download_pretrained(config)
    except Exception as error:  # any download failure: say what to do instead
        raise UserInputError(f"openai:{model_name}: could not download the OpenAI CLIP weights "
                             f"({type(error).__name__}); {advice}") from error


def _hub_cached(config: dict) -> str | None:
    """A release open_clip downloaded before, found without touching the network."""
    repo = config.get("hf_hub", "").strip("/")
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    for filename in (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return cached
    return None
