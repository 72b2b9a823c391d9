"""The folders a case may read from, and how files are named to the person looking at the page.

Anyone who can reach the viewer can open cases, and results name the scans they were computed from,
so every path the viewer opens is resolved (links followed) and must lie inside one of its scope's
roots: the data root for browsed folders, the session's upload folder for uploads (a result uploaded
with its scan may only name files uploaded with it), the data root and the launch `--case` folder for
that folder's results. Messages name files relative to their root, never by server path, and a path
outside the scope gets the same words as a missing one, so the page reveals nothing about the server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medclip_ad.errors import UserInputError

NOT_AVAILABLE = "not available here (missing, or outside the folders this viewer may read)"


@dataclass(frozen=True)
class Scope:
    """Real (resolved) folders that reads are confined to; the first is the one names are relative to."""

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, *folders: Path | None) -> Scope:
        return cls(tuple(Path(folder).resolve() for folder in folders if folder is not None))

    def contains(self, path: Path) -> bool:
        """Whether `path`, after following every link, lies inside a root."""
        real = Path(path).resolve()
        return any(real == root or root in real.parents for root in self.roots)

    def confine(self, path: Path, what: str) -> Path:
        """The real path of an existing `path` inside the scope; one line naming it otherwise."""
        real = Path(path).resolve()
        if not self.contains(real) or not real.exists():
            raise UserInputError(f"{what} {self.name(path)}: {NOT_AVAILABLE}")
        return real

    def name(self, path: Path | str) -> str:
        """`path` relative to the root it lies under, else only its last component: never a server path."""
        path = Path(path)
        for candidate in (path, path.resolve()):
            for root in self.roots:
                if candidate == root:
                    return root.name or "."
                if root in candidate.parents:
                    return candidate.relative_to(root).as_posix()
        return path.name or "?"

    def redact(self, message: str) -> str:
        """A library's message with the scope's server paths replaced by root-relative names."""
        for root in sorted(self.roots, key=lambda folder: len(str(folder)), reverse=True):
            message = message.replace(f"{root}/", "").replace(str(root), root.name or ".")
        return message

    def links_leading_out(self, location: Path) -> list[Path]:
        """The links below `location` (to files, and to folders discovery would skip anyway) that lead
        outside the scope: discovery is told to leave their targets unread."""
        outside: list[Path] = []
        if not location.is_dir():
            return outside
        for folder, subfolders, files in os.walk(location):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            for name in [*subfolders, *files]:
                entry = Path(folder, name)
                if entry.is_symlink() and not self.contains(entry):
                    outside.append(entry)
        return outside
