"""Everything a run (or a merge of shards) writes about itself, from its summary document."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from workbook.runner import junit, shard, site
from workbook.runner.summaries import write_summaries


def write_report(out: Path, doc: dict[str, Any]) -> float:
    """``summary.{json,md,html}``, ``junit.xml``, ``durations.json`` and ``index.html`` in *out*.

    Returns the seconds it took (the per-execution pages are rendered as each execution ends)."""
    start = time.monotonic()
    write_summaries(out, doc)
    junit.write(out, doc)
    shard.write_durations(out, doc["results"])
    site.write_index(out, doc)
    return time.monotonic() - start
