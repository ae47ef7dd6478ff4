"""Logging set-up for the scripts: lines on stderr, as text or as one JSON object each."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `severity`, `message`, `time` (RFC 3339, UTC), `logger`, `worker`."""

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "severity": record.levelname,
            "message": record.getMessage() + (f"\n{self.formatException(record.exc_info)}" if record.exc_info else ""),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
        }
        if self._tag:
            entry["worker"] = self._tag
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, tag: str = "", log_format: str = "text") -> None:
    """Log lines to stderr; `tag` (e.g. a worker's name) goes in front of the logger's name."""
    prefix = f"[{tag}] " if tag else ""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter(tag))
    # The driver logs every failed connection attempt, with a traceback; the pipeline's own
    # retry line says what happened and what it does next. DEBUG shows the driver's view too.
    logging.getLogger("cassandra").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)
