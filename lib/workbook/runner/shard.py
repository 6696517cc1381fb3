"""``--shard K/N``: split the (notebook, mode) executions into N disjoint parts balanced by past durations.

The approach of pytest-split (its ``least_duration`` algorithm): a durations file written by an earlier
run gives each unit its seconds; units without one get the mean of the known ones (1 s when none is
known, which balances by count); units are taken longest first and each goes to the part with the least
total so far (ties: the lower part, then the earlier unit), so the partition is deterministic. Each part
keeps the plan's order. The durations file is JSON ``{"<id>[<mode>]": seconds}``, written by every run
as ``durations.json``.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from workbook._exceptions import RunnerError

DURATIONS = "durations.json"


def unit(notebook_id: str, mode: str) -> str:
    """The name of one (notebook, mode): ``kv-01[incident]``, as in the JUnit report."""
    return f"{notebook_id}[{mode}]"


def parse(spec: str) -> tuple[int, int]:
    """``"2/3"`` → ``(2, 3)``; RunnerError unless 1 <= K <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m:
        raise RunnerError(f"--shard must be K/N (e.g. 1/2), got {spec!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise RunnerError(f"--shard K/N needs 1 <= K <= N, got {spec!r}")
    return k, n


def load_durations(path: Path) -> dict[str, float]:
    """The durations file at *path*; RunnerError with one line if it is not one."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunnerError(f"{path}: not a readable durations file: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            for v in doc.values()):
        raise RunnerError(f"{path}: a durations file maps '<id>[<mode>]' to seconds")
    return {str(k): float(v) for k, v in doc.items()}


def durations_of(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean duration per unit over a run's results (every repeat counts)."""
    seen: dict[str, list[float]] = {}
    for r in rows:
        seen.setdefault(unit(r["id"], r["mode"]), []).append(float(r["duration"]))
    return {k: round(statistics.fmean(v), 2) for k, v in seen.items()}


def write_durations(out: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """``durations.json`` in *out*, for the next run's ``--durations``."""
    (out / DURATIONS).write_text(json.dumps(durations_of(rows), indent=2, sort_keys=True) + "\n")


def partition(units: Sequence[str], parts: int, durations: Mapping[str, float]) -> list[list[str]]:
    """*units* split into *parts* lists, greedy by duration (see the module docstring)."""
    known = [durations[u] for u in units if u in durations]
    default = statistics.fmean(known) if known else 1.0
    order = sorted(range(len(units)), key=lambda i: (-durations.get(units[i], default), i))
    totals = [0.0] * parts
    chosen: list[list[int]] = [[] for _ in range(parts)]
    for i in order:
        part = min(range(parts), key=lambda p: (totals[p], p))
        totals[part] += durations.get(units[i], default)
        chosen[part].append(i)
    return [[units[i] for i in sorted(idx)] for idx in chosen]
