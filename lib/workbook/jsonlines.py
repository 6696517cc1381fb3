"""JSON-lines files written by live processes: the records so far, read while the writer may be mid-line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of *path*, one a line; a missing file is empty, an unreadable (partly written)
    line is skipped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
