"""How dataset problems that are not errors (count mismatches, unused masks) reach the user.

Library code raises a `DatasetWarning` through the standard `warnings` machinery; the CLI collects
them and prints each as one line, so the same checks serve Python callers and the command line.
"""

from __future__ import annotations

import warnings


class DatasetWarning(UserWarning):
    """A dataset looks unlike its published form, but a manifest can still be written."""


def warn_dataset(message: str) -> None:
    """Report a one-line dataset problem that should not stop preparation."""
    warnings.warn(DatasetWarning(message), stacklevel=2)
