"""``workbook report merge DIR… --output DIR``: the shards of one run become one summary, one ``junit.xml``
and one site.

Each shard's ``summary.json`` names its part (``shard``: index, total, every unit of the plan and its
own). The merge refuses, with one line and exit status 2, folders that are not run outputs, shards of
different plans, a missing or duplicated shard, and units run twice or never. It copies each shard's
files (executed notebooks, pages, logs, service run directories) into the output and writes the
report again from the merged results; the pages need no rendering again (their links are relative).
Exit status: 0 iff every verdict in every shard holds and every shard finished.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from workbook._exceptions import RunnerError
from workbook.runner import junit, shard, site
from workbook.runner.report import write_report
from workbook.runner.summaries import repeat_counts

_REPORT_FILES = {"summary.json", "summary.md", "summary.html", junit.JUNIT, site.INDEX, shard.DURATIONS}


def read_run(directory: Path) -> dict[str, Any]:
    """The ``summary.json`` of a run output folder; RunnerError if *directory* is not one."""
    path = directory / "summary.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunnerError(f"{directory}: not a workbook run output (no summary.json)") from None
    except (OSError, ValueError) as exc:
        raise RunnerError(f"{path}: unreadable: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or "run_id" not in doc:
        raise RunnerError(f"{path}: not a workbook run summary (no run_id and results)")
    return doc


def check_shards(docs: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """The plan's units, after checking the shards form it exactly once; RunnerError otherwise."""
    whole = {"index": 1, "total": 1, "units": None, "mine": None}  # a run without --shard
    parts = [(d, doc.get("shard") or whole) for d, doc in docs]
    totals = {p["total"] for _, p in parts}
    if len(totals) != 1:
        raise RunnerError(f"the folders are shards of different splits (N = {sorted(totals)})")
    total = totals.pop()
    seen: dict[int, Path] = {}
    for d, p in parts:
        if p["index"] in seen:
            raise RunnerError(f"shard {p['index']}/{total} given twice: {seen[p['index']]} and {d}")
        seen[p["index"]] = d
    missing = [k for k in range(1, total + 1) if k not in seen]
    if missing:
        raise RunnerError(f"missing shard(s) {', '.join(f'{k}/{total}' for k in missing)}")
    if total == 1:
        return [shard.unit(r["id"], r["mode"]) for r in docs[0][1]["results"]]
    plans = {tuple(p["units"]) for _, p in parts}
    if len(plans) != 1:
        raise RunnerError("the shards come from different plans (other notebooks, modes or profiles)")
    units = list(plans.pop())
    owned = [u for _, p in parts for u in p["mine"]]
    twice = sorted({u for u in owned if owned.count(u) > 1})
    if twice or sorted(owned) != sorted(units):
        raise RunnerError(f"the shards do not split the plan: run twice {twice}, never "
                          f"{sorted(set(units) - set(owned))}")
    for key in ("profile", "mode"):
        values = {doc.get(key) for _, doc in docs}
        if len(values) != 1:
            raise RunnerError(f"the shards differ in {key}: {sorted(map(str, values))}")
    return units


def _copy(src: Path, dest: Path) -> None:
    for item in src.iterdir():
        if item.name in _REPORT_FILES:
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, dirs_exist_ok=True, symlinks=True)
        else:
            shutil.copy2(item, dest / item.name)


def merge(dirs: list[Path], output: Path) -> dict[str, Any]:
    """Merge the shard folders *dirs* into *output*; returns the merged summary document."""
    docs = [(d, read_run(d)) for d in dirs]
    if output.resolve() in {d.resolve() for d in dirs}:
        raise RunnerError(f"--output {output} is one of the shards; merge into a new folder")
    units = check_shards(docs)
    order = {u: n for n, u in enumerate(units)}
    output.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped: dict[tuple[str, str], dict[str, str]] = {}
    for d, doc in docs:
        _copy(d, output)
        rows += doc["results"]
        skipped.update({(s["id"], s["mode"]): s for s in doc.get("skipped", [])})
    rows.sort(key=lambda r: (order.get(shard.unit(r["id"], r["mode"]), len(order)), r["repeat"]))
    shards = sorted(({"index": (doc.get("shard") or {}).get("index", 1),
                      "total": (doc.get("shard") or {}).get("total", 1), "run_id": doc["run_id"],
                      "executions": len(doc["results"]), "exit_status": doc["exit_status"]}
                     for _, doc in docs), key=lambda s: s["index"])
    finished = all(s["exit_status"] in (0, 1) for s in shards)
    ok = finished and all(r["passed"] for r in rows)
    first = docs[0][1]
    return {
        "run_id": dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4],
        "profile": first["profile"], "profile_path": first.get("profile_path"),
        "notebooks_dir": first.get("notebooks_dir"), "mode": first.get("mode"),
        "repeat": max(d.get("repeat", 1) for _, d in docs),
        "started": min(d.get("started", 0) for _, d in docs),
        "finished": max(d.get("finished", 0) for _, d in docs),
        "exit_status": 0 if ok else 1, "results": rows, "skipped": list(skipped.values()),
        "repeat_counts": repeat_counts(rows), "shards": shards,
    }


def cmd_merge(dirs: list[Path], output: Path) -> int:
    """``workbook report merge``: 0 iff every verdict holds, 1 if one does not, 2 on bad input."""
    try:
        doc = merge(dirs, output)
    except RunnerError as exc:
        sys.stderr.write(f"workbook: error: {exc}\n")
        return 2
    write_report(output, doc)
    rows = doc["results"]
    print(f"merged {len(doc['shards'])} shard(s): {len(rows)} execution(s), "
          f"{sum(r['passed'] for r in rows)} passed -> {output / site.INDEX}")
    for r in rows:
        if not r["passed"]:
            print(f"FAILED {r['id']} ({r['mode']}): {r['verdict']}: {r['message']}")
    return doc["exit_status"]
