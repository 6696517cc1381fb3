"""The report site of a run: ``index.html`` beside the per-execution pages (see :mod:`pages`).

The index is a Jinja2 template (the engine nbconvert already brings): the catalogue grouped by family,
both modes' verdicts with their key figures, durations (the spread under ``--repeat``), links to every
execution's page, notebook and logs, and a failed execution's message and failing cell. Every link is
relative, so the folder can be moved, copied or published as it is.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from workbook.runner.summaries import figures_text

INDEX = "index.html"
_TEMPLATES = Path(__file__).resolve().parent / "templates"
_LOG_SUFFIXES = (".log.jsonl", ".out", ".log")  # a service's JSON-lines log and its stdout/stderr capture


def _service_logs(out: Path, runs: str | None) -> list[dict[str, str]]:
    if not runs or not (out / runs).is_dir():
        return []
    logs = sorted(p for p in (out / runs).rglob("*") if p.name.endswith(_LOG_SUFFIXES) and p.is_file())
    return [{"name": p.name, "path": p.relative_to(out).as_posix()} for p in logs]


def model(out: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the index template shows: families → notebooks → modes → executions."""
    families: dict[str, dict[str, dict[str, Any]]] = {}
    for r in doc["results"]:
        nb = families.setdefault(r.get("family", "general"), {}).setdefault(r["id"], {
            "id": r["id"], "title": r["title"], "source": r.get("source", ""),
            "defects": r.get("defects", []), "modes": {}})
        nb["modes"].setdefault(r["mode"], []).append(r)
    out_families = []
    for name in sorted(families):
        notebooks = []
        for nb_id in sorted(families[name]):
            nb = families[name][nb_id]
            modes = []
            for mode in sorted(nb["modes"], key=lambda m: (m != "incident", m)):
                rows = sorted(nb["modes"][mode], key=lambda r: r["repeat"])
                durations = [float(r["duration"]) for r in rows]
                passed = sum(bool(r["passed"]) for r in rows)
                executions = [{**r["paths"], "repeat": r["repeat"], "verdict": r["verdict"],
                               "service_logs": _service_logs(out, r["paths"].get("runs"))} for r in rows]
                worst = next((r for r in rows if not r["passed"]), rows[-1])
                modes.append({
                    "mode": mode, "runs": len(rows), "passed": passed,
                    "verdict": "pass" if passed == len(rows) else worst["verdict"],
                    "reproduced": worst["reproduced"], "figures": figures_text(worst["figures"], 8),
                    "min": min(durations), "max": max(durations),
                    "median": round(statistics.median(durations), 2), "executions": executions,
                    "failures": [r for r in rows if not r["passed"]],
                })
            notebooks.append({**nb, "modes": modes})
        out_families.append({"name": name, "notebooks": notebooks})
    rows = doc["results"]
    return {"doc": doc, "rows": rows, "families": out_families,
            "passed": sum(bool(r["passed"]) for r in rows),
            "verdicts": dict(collections.Counter(r["verdict"] for r in rows)),
            "skipped": doc.get("skipped", []), "shards": doc.get("shards", [])}


def write_index(out: Path, doc: Mapping[str, Any]) -> Path:
    """``index.html`` in *out* for the run summary *doc*."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    page = env.get_template("index.html.j2").render(**model(out, doc))
    path = out / INDEX
    path.write_text(page, encoding="utf-8")
    return path
