"""What a batch run does with a case that fails: one line naming the input, and the run goes on.

An expected failure (a `UserInputError`: a bad file, an impossible combination) is its own message.
Anything else (CUDA out of memory, a library's RuntimeError, a bug) also becomes one line naming the
input, and its traceback is appended to `errors.log` in the output folder, so nothing is hidden and the
terminal stays readable. The lines are printed as they happen and again, all together, at the end.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from medclip_ad.errors import UserInputError, one_line
from medclip_ad.output_files import ERROR_LOG_FILE


@dataclass
class CaseFailures:
    """The failure lines of one run, and where unexpected errors' tracebacks go."""

    out_dir: Path
    lines: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return Path(self.out_dir) / ERROR_LOG_FILE

    def add(self, line: object) -> str:
        """Record a failure that is already one line (a discovery problem, a partly written case)."""
        text = one_line(line)
        self.lines.append(text)
        return text

    def record(self, where: object, error: BaseException) -> str:
        """One line for a case that raised `error`; an unexpected error's traceback goes to the log."""
        expected = user_error_in(error)
        if expected is not None:
            return self.add(expected)
        cause = innermost_cause(error)
        logged = self._log(where, error)
        return self.add(f"{where}: {describe_unexpected(cause)} ({logged})")

    def _log(self, where: object, error: BaseException) -> str:
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {one_line(where)}\n")
                log.writelines(traceback.format_exception(error))
        except OSError as log_error:
            return f"its traceback could not be written to {self.log_path}: {log_error.strerror}"
        return f"traceback in {self.log_path}"


def user_error_in(error: BaseException | None) -> UserInputError | None:
    """The `UserInputError` behind `error`, if any (MONAI's Compose wraps what a transform raised)."""
    while error is not None and not isinstance(error, UserInputError):
        error = error.__cause__
    return error


def innermost_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def describe_unexpected(error: BaseException) -> str:
    """A short, honest account of an error nobody anticipated; out-of-memory gets what to do about it."""
    if type(error).__name__ == "OutOfMemoryError" or isinstance(error, MemoryError):
        device = "GPU" if type(error).__name__ == "OutOfMemoryError" else "host"
        return f"out of {device} memory while processing this case (try a smaller --batch-size)"
    detail = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"unexpected {type(error).__name__}" + (f": {detail[:200]}" if detail else "")


def print_failure(line: str) -> None:
    """A failure line on stderr, between progress bars rather than through them."""
    from tqdm import tqdm

    tqdm.write(f"medclip-ad: error: {line}", file=sys.stderr)
