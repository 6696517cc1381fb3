"""``summary.json``, ``summary.md`` and ``summary.html``: the flat record of a run that other tools read."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def figures_text(figures: dict[str, Any], limit: int = 4) -> str:
    """The first *limit* key figures as ``k=v, ...``."""
    items = list(figures.items())[:limit]
    return ", ".join(f"{k}={v}" for k, v in items)


def repeat_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Passes and runs per ``id/mode``: the workbook's stability record under ``--repeat``."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = counts.setdefault(f"{row['id']}/{row['mode']}", {"passed": 0, "runs": 0})
        entry["runs"] += 1
        entry["passed"] += int(row["passed"])
    return counts


def write_summaries(out: Path, doc: dict[str, Any]) -> None:
    """summary.json, summary.md and summary.html in *out*."""
    (out / "summary.json").write_text(json.dumps(doc, indent=2, default=str))
    rows = doc["results"]
    md = [f"# Workbook run {doc['run_id']}", "",
          f"Profile `{doc['profile']}`, {len(rows)} executions, "
          f"{sum(r['passed'] for r in rows)} passed. Exit status {doc['exit_status']}.", "",
          "| id | mode | verdict | reproduced | duration (s) | key figures | notebook |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        nb = r["paths"]["html"] or r["paths"]["notebook"] or ""
        md.append(f"| {r['id']} | {r['mode']}{'' if r['repeat'] == 1 else ' #' + str(r['repeat'])} | "
                  f"{r['verdict']} | {r['reproduced']} | {r['duration']} | "
                  f"{figures_text(r['figures'])} | {f'[{nb}]({nb})' if nb else ''} |")
    if doc["skipped"]:
        md += ["", "Not run:"] + [f"- {s['id']} {s['mode']}: {s['reason']}" for s in doc["skipped"]]
    if any(c["runs"] > 1 for c in doc["repeat_counts"].values()):
        md += ["", "| notebook/mode | passed | runs |", "| --- | --- | --- |"]
        md += [f"| {k} | {v['passed']} | {v['runs']} |" for k, v in doc["repeat_counts"].items()]
    failures = [r for r in rows if not r["passed"]]
    for r in failures:
        md += ["", f"## {r['id']} ({r['mode']}): {r['verdict']}", "", r["message"]]
        if r["failure"]:
            md += ["", f"Cell {r['failure']['cell']}:", "", "```python", r["failure"]["source"], "```", "",
                   f"`{r['failure']['error']}`"]
    (out / "summary.md").write_text("\n".join(md) + "\n")

    def cell(text: Any) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    trs = []
    for r in rows:
        link = r["paths"]["html"] or r["paths"]["notebook"]
        anchor = f'<a href="{html.escape(link)}">{html.escape(link)}</a>' if link else ""
        color = "#dfd" if r["passed"] else "#fdd"
        trs.append(f'<tr style="background:{color}">' + cell(r["id"]) + cell(r["mode"]) + cell(r["verdict"])
                   + cell(r["reproduced"]) + cell(r["duration"]) + cell(figures_text(r["figures"], 8))
                   + cell(r["message"]) + f"<td>{anchor}</td></tr>")
    fails = "".join(
        f"<h2>{html.escape(r['id'])} ({html.escape(r['mode'])}): {html.escape(r['verdict'])}</h2>"
        f"<p>{html.escape(r['message'])}</p>"
        + (f"<pre>{html.escape(r['failure']['source'])}</pre><p><code>{html.escape(r['failure']['error'])}"
           "</code></p>" if r["failure"] else "")
        for r in failures)
    skipped = "".join(f"<li>{html.escape(s['id'])} {html.escape(s['mode'])}: {html.escape(s['reason'])}</li>"
                      for s in doc["skipped"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Workbook run {doc['run_id']}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border:1px solid #ccc}"
            "table{border-collapse:collapse}</style></head><body>"
            f"<h1>Workbook run {html.escape(doc['run_id'])}</h1><p>Profile {html.escape(doc['profile'])}; "
            f"exit status {doc['exit_status']}.</p><table><tr><th>id</th><th>mode</th><th>verdict</th>"
            "<th>reproduced</th><th>duration (s)</th><th>key figures</th><th>message</th>"
            "<th>notebook</th></tr>"
            + "".join(trs) + "</table>" + (f"<p>Not run:</p><ul>{skipped}</ul>" if skipped else "")
            + fails + "</body></html>")
    (out / "summary.html").write_text(page, encoding="utf-8")
