"""The one exception type that reaches users as a single clear line instead of a traceback, how such
lines are made safe to print, and SIGTERM turned into an interruption that cleans up like Ctrl-C."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class UserInputError(Exception):
    """Bad input from the user (a file, a checkpoint, an option): reported as one line, exit code 2.

    The message names the offending file or option and what is wrong with it.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: unfinished case folders and files are removed on the way out."""


# Exit codes of the command line: user errors, runs where only some inputs failed, and interruptions.
USER_ERROR_EXIT = 2
PARTIAL_FAILURE_EXIT = 1
INTERRUPTED_EXIT = 130
TERMINATED_EXIT = 143

# Control characters (C0, DEL, C1): a file name holding a newline, a carriage return or an escape
# sequence must neither split an error line nor rewrite the terminal.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: object) -> str:
    """`text` with every control character escaped (`\\n`, `\\x1b`), so it prints as exactly one line."""
    return _CONTROL_CHARACTERS.sub(lambda match: repr(match.group())[1:-1], str(text))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) raises `Terminated` like Ctrl-C, so staged outputs are cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
