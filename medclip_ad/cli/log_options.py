"""`--log-level` and `--log-format`: how the package's log records reach stderr.

`json` writes one JSON object per line (time in UTC, level, logger, message), for log collectors, and
routes Python warnings through it too.
Results and summaries still go to stdout as text; this governs the diagnostic stream.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
LOG_FORMATS: tuple[str, ...] = ("text", "json")
_HANDLER_NAME = "medclip-ad"


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="least severe log records shown")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text", help="text, or one JSON object per line")


class JsonLineFormatter(logging.Formatter):
    """A record as one JSON line: time (ISO 8601, UTC), level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        document = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(), "logger": record.name,
                    "message": record.getMessage()}
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(level: str, log_format: str) -> None:
    """Route the root logger (and warnings) to stderr in the chosen level and format.

    A second call replaces the handler of the first; handlers others installed are left alone.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonLineFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in [existing for existing in root.handlers if existing.get_name() == _HANDLER_NAME]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(log_format == "json")  # as JSON lines too; in text, Python's own warning format
