"""Uploaded files onto the server's disk, where the package's readers can discover and read them.

Uploads are untrusted: names are reduced to a bare file name, and zip archives (how PACS exports and
people send a DICOM series) are unpacked member by member with every path checked to stay inside the
upload folder. Every byte written, files and unpacked members alike, counts against a budget (what
the session and the server may still keep, see `medclip_ad.limits`), so neither one crafted archive
nor many uploads can fill the disk. Streamlit's `server.maxUploadSize` caps each file on top.
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
from medclip_ad.limits import MAX_ZIP_MEMBERS

UPLOAD_HINT = "DICOM files or a .zip of a series, NIfTI (.nii, .nii.gz), PNG, JPEG or TIFF"

_COPY_CHUNK = 2**20
# A Windows drive ("C:"), which would make a member path absolute where the archive was made.
_DRIVE = re.compile(r"^[A-Za-z]:")


class _Budget:
    """Bytes an upload may still write; exhausting it is a one-line refusal naming the upload."""

    def __init__(self, allowed: int) -> None:
        self.allowed, self.left = allowed, allowed

    def check(self, count: int, name: str) -> None:
        if count > self.left:
            raise UserInputError(f"{name}: the upload would take more than the {self.allowed / 2**20:,.1f} MB this "
                                 "viewer may still store for you")

    def spend(self, count: int, name: str) -> None:
        self.check(count, name)
        self.left -= count


def folder_bytes(folder: Path) -> int:
    """Bytes of the files below `folder` (links not followed): what uploads there take on disk."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink()) \
        if folder.is_dir() else 0


def upload_digest(files: Sequence[tuple[str, bytes]]) -> str:
    """A content hash of an upload (names and bytes): the same files give the same case and results."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode("utf-8", "replace") + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def save_upload(files: Sequence[tuple[str, bytes]], folder: Path, budget_bytes: int) -> Path:
    """Write uploaded (name, bytes) pairs into an empty `folder`, unpacking zip archives, writing at most
    `budget_bytes`; returns the folder. On any refusal the folder is removed again."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    budget = _Budget(budget_bytes)
    try:
        used: set[str] = set()
        for index, (name, data) in enumerate(files):
            safe = _safe_file_name(name)
            if safe.lower() in used:
                safe = f"{index}_{safe}"
            used.add(safe.lower())
            if safe.lower().endswith(".zip"):
                _unpack_zip(data, folder / Path(safe).stem, safe, budget)
            else:
                budget.spend(len(data), safe)
                (folder / safe).write_bytes(data)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _safe_file_name(name: str) -> str:
    """The bare name of an uploaded file, without folders or characters a filesystem may refuse."""
    bare = PurePosixPath(name.replace("\\", "/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", bare).lstrip(".") or "upload"


def _unpack_zip(data: bytes, destination: Path, name: str, budget: _Budget) -> None:
    """Unpack a zip archive below `destination`, refusing members that escape it and contents over budget.

    A single top-level folder (how a zipped series folder looks) is dropped, so the case is named after
    the archive either way. A name that is both a file and a folder (`a` and `a/b.png`) is refused.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UserInputError(f"{name}: not a readable zip archive ({exc})") from exc
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise UserInputError(f"{name}: holds {len(members):,} files, the limit is {MAX_ZIP_MEMBERS:,}")
        budget.check(sum(info.file_size for info in members), name)  # what the archive declares...
        parts = [_member_parts(info.filename, name) for info in members]
        _refuse_file_folder_clashes(parts, name)
        tops = {member[0] for member in parts}
        if len(tops) == 1 and all(len(member) > 1 for member in parts):
            parts = [member[1:] for member in parts]
        for info, member in zip(members, parts):
            target = destination.joinpath(*member)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as source, open(target, "wb") as sink:
                    _copy_within(source, sink, budget, name)  # ...and what the streams really hold
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
                raise UserInputError(f"{name}: corrupt zip member {info.filename!r} ({type(exc).__name__})") from exc


def _member_parts(member: str, name: str) -> tuple[str, ...]:
    """A zip member's path components; absolute names and '..' are refused (they would escape the folder)."""
    parts = PurePosixPath(member.replace("\\", "/")).parts
    if not parts or member.startswith("/") or ".." in parts or _DRIVE.match(parts[0]):
        raise UserInputError(f"{name}: refuses member {member!r}, whose path leads outside the archive")
    return parts


def _refuse_file_folder_clashes(parts: list[tuple[str, ...]], name: str) -> None:
    """A member path that is also another member's folder (or the same path twice) cannot be unpacked."""
    files = {tuple(part.lower() for part in member) for member in parts}
    if len(files) < len(parts):
        raise UserInputError(f"{name}: holds the same member path twice")
    for member in parts:
        for depth in range(1, len(member)):
            if tuple(part.lower() for part in member[:depth]) in files:
                raise UserInputError(f"{name}: {'/'.join(member[:depth])!r} is both a file and a folder in the "
                                     "archive")


def _copy_within(source, sink, budget: _Budget, name: str) -> None:
    """Copy a member while counting bytes: sizes in a zip's directory can lie, the stream cannot."""
    while chunk := source.read(_COPY_CHUNK):
        budget.spend(len(chunk), name)
        sink.write(chunk)
