"""What the attack tests share: a record of every file the process opens or lists, and the checks on the
one line a user gets."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_RECORDING: list[list[str]] = []
_WATCHED_EVENTS = ("open", "os.listdir", "os.scandir", "shutil.rmtree", "os.remove", "os.rename")


def _audit(event: str, args: tuple) -> None:
    if _RECORDING and event in _WATCHED_EVENTS and args:
        target = args[0]
        if isinstance(target, (str, bytes, Path)):
            _RECORDING[-1].append(str(target if not isinstance(target, bytes) else target.decode("utf-8", "replace")))


sys.addaudithook(_audit)


@contextmanager
def touched_paths() -> Iterator[list[str]]:
    """Every path Python code opens, lists, renames or deletes inside the block (audit events)."""
    record: list[str] = []
    _RECORDING.append(record)
    try:
        yield record
    finally:
        _RECORDING.remove(record)


def assert_untouched(record: list[str], *folders: Path) -> None:
    """Nothing under `folders` (as given or resolved) was opened, listed or changed."""
    forbidden = {str(folder) for folder in folders} | {str(Path(folder).resolve()) for folder in folders}
    touched = [path for path in record if any(path == f or path.startswith(f"{f}/") for f in forbidden)]
    assert not touched, touched


def assert_one_line(message: str, *words: str, server_paths: tuple[Path, ...] = ()) -> None:
    """A single line holding `words`, naming none of `server_paths`."""
    assert "\n" not in message and message.strip(), message
    assert all(word in message for word in words), message
    assert not any(str(path) in message for path in server_paths), message
