"""JSON-lines logs: one object per line with ``ts``, ``level``, ``service``, ``name``, ``event`` and fields.

Notebooks load these files into pandas for timelines and message sequence charts, so every line is a
complete JSON object and field names are stable.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any


class JsonLogger:
    """Writes structured events; thread-safe; flushes every line so a SIGKILL loses nothing written."""

    def __init__(self, service: str, name: str, stream: IO[str]) -> None:
        self.service = service
        self.name = name
        self._stream = stream
        self._lock = threading.Lock()

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Log *event* with *fields* (anything JSON can't encode is written as its ``str``)."""
        record = {"ts": time.time(), "level": level, "service": self.service, "name": self.name,
                  "event": event, **fields}
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (ValueError, OSError):  # stream closed during shutdown
                pass

    def info(self, event: str, **fields: Any) -> None:
        self.event(event, "info", **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.event(event, "warning", **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.event(event, "error", **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self.event(event, "debug", **fields)


class _StdlibBridge(logging.Handler):
    """Routes stdlib logging (aiohttp, grpc, websockets) into the JSON log at WARNING and above."""

    def __init__(self, log: JsonLogger) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        self._log.event("library", record.levelname.lower(), logger=record.name, message=record.getMessage())


def configure_logging(service: str, name: str, log_file: str | None) -> JsonLogger:
    """Open the JSON-lines log (*log_file*, appended, or stderr when None) and bridge stdlib logging."""
    stream: IO[str] = open(Path(log_file), "a", buffering=1, encoding="utf-8") if log_file else sys.stderr
    log = JsonLogger(service, name, stream)
    root = logging.getLogger()
    root.addHandler(_StdlibBridge(log))
    root.setLevel(logging.WARNING)
    return log
