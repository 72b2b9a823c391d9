"""Uploaded files onto the server's disk, where the package's readers can discover and read them.

Uploads are untrusted: names are reduced to a bare file name, and zip archives (how PACS exports and
people send a DICOM series) are unpacked member by member with every path checked to stay inside the
upload folder and a cap on the unpacked size, so a crafted archive can neither write elsewhere nor fill
the disk. The per-file upload limit itself is Streamlit's `server.maxUploadSize`.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from medclip_ad.errors import UserInputError

# Unpacked zip contents may total at most this many bytes (a 2000-slice 512 x 512 CT is about 1 GiB).
MAX_UNZIPPED_BYTES: int = 4 * 2**30
# ... and hold at most this many files.
MAX_ZIP_MEMBERS: int = 20_000
UPLOAD_HINT = "DICOM files or a .zip of a series, NIfTI (.nii, .nii.gz), PNG, JPEG or TIFF"

_COPY_CHUNK = 2**20


def upload_digest(files: Sequence[tuple[str, bytes]]) -> str:
    """A content hash of an upload (names and bytes): the same files give the same case and results."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode("utf-8", "replace") + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def save_upload(files: Sequence[tuple[str, bytes]], folder: Path) -> Path:
    """Write uploaded (name, bytes) pairs into an empty `folder`, unpacking zip archives; returns it."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    used: set[str] = set()
    for index, (name, data) in enumerate(files):
        safe = _safe_file_name(name)
        if safe.lower() in used:
            safe = f"{index}_{safe}"
        used.add(safe.lower())
        if safe.lower().endswith(".zip"):
            _unpack_zip(data, folder / Path(safe).stem, name)
        else:
            (folder / safe).write_bytes(data)
    return folder


def _safe_file_name(name: str) -> str:
    """The bare name of an uploaded file, without folders or characters a filesystem may refuse."""
    bare = PurePosixPath(name.replace("\\", "/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", bare).lstrip(".") or "upload"


def _unpack_zip(data: bytes, destination: Path, name: str) -> None:
    """Unpack a zip archive below `destination`, refusing members that escape it and oversized contents.

    A single top-level folder (how a zipped series folder looks) is dropped, so the case is named after
    the archive either way.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UserInputError(f"{name}: not a readable zip archive ({exc})") from exc
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise UserInputError(f"{name}: holds {len(members):,} files, the limit is {MAX_ZIP_MEMBERS:,}")
        if sum(info.file_size for info in members) > MAX_UNZIPPED_BYTES:
            raise UserInputError(f"{name}: unpacks to more than {MAX_UNZIPPED_BYTES / 2**30:g} GiB")
        parts = [_member_parts(info.filename, name) for info in members]
        tops = {member[0] for member in parts}
        if len(tops) == 1 and all(len(member) > 1 for member in parts):
            parts = [member[1:] for member in parts]
        budget = MAX_UNZIPPED_BYTES
        for info, member in zip(members, parts):
            target = destination.joinpath(*member)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as source, open(target, "wb") as sink:
                    budget = _copy_within(source, sink, budget, name)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
                raise UserInputError(f"{name}: corrupt zip member {info.filename!r} ({exc})") from exc


def _member_parts(member: str, name: str) -> tuple[str, ...]:
    """A zip member's path components; absolute names and '..' are refused (they would escape the folder)."""
    parts = PurePosixPath(member.replace("\\", "/")).parts
    if not parts or member.startswith("/") or ".." in parts or ":" in parts[0]:
        raise UserInputError(f"{name}: refuses member {member!r}, whose path leads outside the archive")
    return parts


def _copy_within(source, sink, budget: int, name: str) -> int:
    """Copy a member while counting bytes: sizes in a zip's directory can lie, the stream cannot."""
    while chunk := source.read(_COPY_CHUNK):
        budget -= len(chunk)
        if budget < 0:
            raise UserInputError(f"{name}: unpacks to more than {MAX_UNZIPPED_BYTES / 2**30:g} GiB")
        sink.write(chunk)
    return budget
