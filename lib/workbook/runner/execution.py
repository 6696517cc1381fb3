"""``workbook run``: execute each (notebook, mode) through papermill, judge it, and write the summaries.

Every execution is a child process (``workbook.runner._papermill``) in its own process group, so the
notebook's whole-run time limit can be enforced by killing its tree (papermill, kernel, services); afterwards
the runs its kernel registered are reaped. The verdict comes from the JSON sidecar the notebook's
verdict cell writes; a failure is described from the output notebook itself (the failing cell's
source and error), since papermill's per-cell status is unreliable after a kill.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import html
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbook import registry, verdict
from workbook._exceptions import RunnerError
from workbook.launch import spawn
from workbook.params import ParameterError, type_name, validate
from workbook.runner import catalog, profiles
from workbook.runner.catalog import CatalogError, NotebookInfo
from workbook.runner.profiles import Profile, ProfileError

KERNEL = "python3"
_print_lock = threading.Lock()
_render_lock = threading.Lock()




@dataclass
class Job:
    """One execution of one notebook in one mode."""

    info: NotebookInfo
    mode: str
    repeat: int
    stem: str
    parameters: dict[str, Any]
    timeout: float
    result: dict[str, Any] = field(default_factory=dict)


def _say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


# --------------------------------------------------------------------------------------------------
# planning


def plan(infos: list[NotebookInfo], ids: list[str], mode: str, profile: Profile, repeat: int,
         timeout: float | None) -> tuple[list[Job], list[dict[str, str]]]:
    """The jobs to run and the (notebook, mode) pairs skipped; RunnerError on a bad request."""
    by_id = {i.id: i for i in infos}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise RunnerError(f"unknown notebook id {', '.join(map(repr, unknown))}; known: "
                          f"{', '.join(by_id) or 'none'}")
    chosen = [by_id[i] for i in dict.fromkeys(ids)] if ids else infos
    wanted = catalog.MODES if mode == "both" else (mode,)
    jobs: list[Job] = []
    skipped: list[dict[str, str]] = []
    for info in chosen:
        declared = catalog.check_parameters(info)
        base = profile.parameters_for(info.id, declared)
        for name, value in base.items():
            if name not in declared:
                raise RunnerError(f"{profile.path}: notebooks.{info.id}.{name}: {info.id} has no parameter "
                                  f"{name!r} (it declares: {', '.join(declared)})")
            try:
                validate(name, value, type_name(declared[name]))
            except ParameterError as exc:
                raise RunnerError(f"{profile.path}: {info.id}: {exc}") from None
        for m in wanted:
            if m not in info.modes:
                skipped.append({"id": info.id, "mode": m, "reason": "no incident mode (no defect switches)"})
                continue
            for r in range(1, repeat + 1):
                stem = f"{info.id}.{m}" + (f".r{r}" if repeat > 1 else "")
                values = {**base, "mode": m}
                if "profile" in declared:
                    values["profile"] = profile.name
                limit = timeout if timeout is not None else profile.timeout(info.id)
                jobs.append(Job(info, m, r, stem, values, limit))
    return jobs, skipped


def injected_parameters(job: Job, out: Path) -> dict[str, Any]:
    """What papermill injects: the values plus the bookkeeping the kernel-side checks need."""
    declared = job.info.parameters()
    return {
        **job.parameters,
        "workbook_notebook_id": job.info.id,
        "workbook_sidecar": str(out / f"{job.stem}.verdict.json"),
        "workbook_declared": {k: type_name(v) for k, v in declared.items()},
        "workbook_injected": sorted(job.parameters),
    }


# --------------------------------------------------------------------------------------------------
# executing


def _first_error(nb_path: Path, stopped: str | None) -> dict[str, Any] | None:
    """The failing cell of an output notebook: index, source and error (or the cell *stopped* cut short)."""
    try:
        nb = json.loads(nb_path.read_text())
    except (OSError, ValueError):
        return None
    code = [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]
    for index, cell in code:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return {"cell": index, "execution_count": cell.get("execution_count"),
                        "source": catalog.cell_source(cell),
                        "error": f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()}
    if stopped:
        running = [(i, c) for i, c in code
                   if c.get("metadata", {}).get("papermill", {}).get("status") == "running"]
        if not running:  # the save may predate the cell: take the first cell that never completed
            running = [(i, c) for i, c in code if c.get("execution_count") is None][:1]
        if running:
            index, cell = running[0]
            return {"cell": index, "execution_count": cell.get("execution_count"),
                    "source": catalog.cell_source(cell), "error": f"{stopped} here"}
    return None


def _render_html(nb_path: Path, html_path: Path) -> str | None:
    """Render the executed notebook to HTML; returns an error line instead of raising."""
    try:
        with _render_lock:
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter().from_filename(str(nb_path))
        html_path.write_text(body, encoding="utf-8")
        return None
    except Exception as exc:
        return f"HTML rendering failed: {type(exc).__name__}: {exc}"


def execute(job: Job, out: Path, abort: threading.Event, *, render: bool = True) -> dict[str, Any]:
    """Run one job to completion or its time limit; returns its summary row."""
    nb_out = out / f"{job.stem}.ipynb"
    log_path = out / f"{job.stem}.log"
    run_base = out / "runs" / job.stem
    run_base.mkdir(parents=True, exist_ok=True)
    spec = {"input": str(job.info.path.resolve()), "output": str(nb_out), "kernel": KERNEL,
            "cwd": str(job.info.path.resolve().parent), "parameters": injected_parameters(job, out)}
    spec_path = run_base / "execute.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    # Papermill, the kernel and everything under them get a private temp dir, removed whatever happens
    # (a kernel killed at its time limit never deletes the connection file jupyter_client put there).
    # The registry stays the shared one: by default its place derives from the temp dir.
    scratch = Path(tempfile.mkdtemp(prefix=f"workbook-{job.stem}-"))
    # No MPLBACKEND here: the kernel's inline backend is what puts figures into the notebook and its HTML.
    env = {"WORKBOOK_RUN_BASE": str(run_base), "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),
           "TMPDIR": str(scratch), "WORKBOOK_REGISTRY": str(registry.registry_dir())}
    start = time.monotonic()
    timed_out = interrupted = False
    try:
        proc = spawn([sys.executable, "-m", "workbook.runner._papermill", str(spec_path)],
                     out_path=log_path, env=env)
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if abort.is_set() or time.monotonic() - start > job.timeout:
                    timed_out, interrupted = not abort.is_set(), abort.is_set()
                    registry.kill_tree(proc.pid)
                    proc.wait()
                    break
        duration = time.monotonic() - start
        reaped = registry.reap(under=run_base)  # whatever the (killed) kernel left
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    side = verdict.read_sidecar(out / f"{job.stem}.verdict.json")
    stopped = "time limit exceeded" if timed_out else "interrupted" if interrupted else None
    failure = _first_error(nb_out, stopped)
    if timed_out:
        outcome, message = "timeout", f"time limit of {job.timeout:g} s exceeded"
    elif interrupted:
        outcome, message = "interrupted", "interrupted"
    elif proc.returncode == 0 and side is not None and side.get("passed"):
        outcome, message = "pass", ""
    elif side is not None and not side.get("passed"):
        outcome, message = "fail", side.get("message") or "verdict does not hold"
    elif proc.returncode == 0:
        outcome, message = "error", "the notebook finished without a verdict (workbook.verdict.conclude)"
    elif failure is not None:
        outcome, message = "error", failure["error"]
    else:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
        outcome, message = "error", f"papermill failed: {tail[0] if tail else 'no output'}"
    html_path = out / f"{job.stem}.html"
    render_error = _render_html(nb_out, html_path) if render and nb_out.exists() else None
    row = {
        "id": job.info.id, "title": job.info.title, "mode": job.mode, "repeat": job.repeat,
        "verdict": outcome, "passed": outcome == "pass", "message": message,
        "reproduced": side.get("reproduced") if side else None,
        "duration": round(duration, 2), "figures": (side or {}).get("figures", {}),
        "failure": failure if outcome != "pass" else None,
        "timeout": job.timeout, "parameters": job.parameters,
        "paths": {
            "notebook": nb_out.name if nb_out.exists() else None,
            "html": html_path.name if html_path.exists() else None,
            "sidecar": f"{job.stem}.verdict.json" if side else None,
            "log": log_path.name, "runs": str(run_base.relative_to(out)),
        },
        "reaped": [p["name"] for rep in reaped for p in rep.killed],
    }
    if render_error:
        row["html_error"] = render_error
    job.result = row
    return row


# --------------------------------------------------------------------------------------------------
# summaries


def _figures_text(figures: dict[str, Any], limit: int = 4) -> str:
    items = list(figures.items())[:limit]
    return ", ".join(f"{k}={v}" for k, v in items)


def _repeat_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
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
                  f"{_figures_text(r['figures'])} | {f'[{nb}]({nb})' if nb else ''} |")
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
                   + cell(r["reproduced"]) + cell(r["duration"]) + cell(_figures_text(r["figures"], 8))
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


# --------------------------------------------------------------------------------------------------
# commands


def cmd_list(notebooks_dir: Path) -> int:
    """Print id, modes, title, source document and defect switches of every notebook."""
    try:
        infos = catalog.discover(notebooks_dir)
    except CatalogError as exc:
        sys.stderr.write(f"workbook: error: {exc}\n")
        return 2
    if not infos:
        print(f"no notebooks under {notebooks_dir}")
        return 0
    rows = [("id", "modes", "title", "source", "defects")]
    rows += [(i.id, "+".join(i.modes), i.title, i.source, ", ".join(i.defects) or "(none: fixed only)")
             for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4])
    return 0


def default_output(run_id: str) -> Path:
    return profiles.ROOT / "outputs" / run_id


def cmd_run(notebooks_dir: Path, args: argparse.Namespace) -> int:
    """``workbook run``: plan, execute with ``--jobs`` in parallel, summarise; 0 iff every verdict holds."""
    try:
        if args.jobs < 1 or args.repeat < 1:
            raise RunnerError("--jobs and --repeat must be at least 1")
        if args.timeout is not None and args.timeout <= 0:
            raise RunnerError("--timeout must be positive")
        profile = profiles.load(args.profile)
        infos = catalog.discover(notebooks_dir)
        jobs, skipped = plan(infos, args.ids, args.mode, profile, args.repeat, args.timeout)
    except (RunnerError, ProfileError, CatalogError) as exc:
        sys.stderr.write(f"workbook: error: {exc}\n")
        return 2
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    out = (args.output or default_output(run_id)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    total = len(jobs)
    _say(f"workbook run {run_id}: {total} execution(s), profile {profile.name}, jobs {args.jobs} -> {out}")
    for s in skipped:
        _say(f"  skip {s['id']} {s['mode']}: {s['reason']}")
    abort = threading.Event()
    done = 0

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the run like Ctrl-C: kill the executions, reap, summarise

    previous = signal.signal(signal.SIGTERM, on_term)
    rows: list[dict[str, Any]] = []

    def one(job: Job) -> dict[str, Any]:
        _say(f"[{done}/{total}] start {job.stem} (limit {job.timeout:g} s)")
        return execute(job, out, abort, render=not args.no_html)

    interrupted = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(one, job): job for job in jobs}
        pending = set(futures)
        while pending:
            try:
                finished, pending = concurrent.futures.wait(pending, timeout=0.2,
                                                            return_when=concurrent.futures.FIRST_COMPLETED)
                for f in finished:
                    if f.cancelled():
                        continue
                    row = f.result()
                    rows.append(row)
                    done += 1
                    extra = "" if row["passed"] else f": {row['message']}"
                    rep = "" if row["reproduced"] is None else f", reproduced={row['reproduced']}"
                    _say(f"[{done}/{total}] {row['verdict'].upper():5} {futures[f].stem} "
                         f"{row['duration']:.1f} s{rep}{extra}")
            except KeyboardInterrupt:
                if not interrupted:
                    _say("interrupted: stopping the running notebooks and their services")
                interrupted = True
                abort.set()
                for f in pending:
                    f.cancel()
    signal.signal(signal.SIGTERM, previous)
    order = {job.stem: n for n, job in enumerate(jobs)}
    rows.sort(key=lambda r: order[f"{r['id']}.{r['mode']}" + (f".r{r['repeat']}" if args.repeat > 1 else "")])
    ok = bool(rows) and all(r["passed"] for r in rows) and len(rows) == total and not interrupted
    if total == 0 and not interrupted:
        ok = True  # nothing to run is not a failure (e.g. no notebooks yet)
    status = 0 if ok else (130 if interrupted else 1)
    doc = {"run_id": run_id, "profile": profile.name, "profile_path": str(profile.path),
           "notebooks_dir": str(notebooks_dir), "mode": args.mode, "repeat": args.repeat,
           "started": started, "finished": time.time(), "exit_status": status, "results": rows,
           "skipped": skipped, "repeat_counts": _repeat_counts(rows)}
    write_summaries(out, doc)
    _print_table(rows, doc)
    _say(f"summary: {out / 'summary.html'}")
    return status


def _print_table(rows: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    lines = [("id", "mode", "verdict", "reproduced", "seconds", "key figures")]
    for r in rows:
        mode = r["mode"] + ("" if r["repeat"] == 1 else f" #{r['repeat']}")
        lines.append((r["id"], mode, r["verdict"], str(r["reproduced"]), f"{r['duration']:.1f}",
                      _figures_text(r["figures"])))
    widths = [max(len(line[c]) for line in lines) for c in range(5)]
    for line in lines:
        _say("  ".join(line[c].ljust(widths[c]) for c in range(5)) + "  " + line[5])
    if doc["repeat"] > 1:
        for key, c in doc["repeat_counts"].items():
            _say(f"  {key}: {c['passed']}/{c['runs']} passed")
    for r in rows:
        if not r["passed"] and r["failure"]:
            src = r["failure"]["source"].strip().splitlines()
            shown = "\n      ".join(src[:12]) + ("\n      ..." if len(src) > 12 else "")
            _say(f"FAILED {r['id']} ({r['mode']}): {r['message']}\n  cell {r['failure']['cell']}:\n"
                 f"      {shown}\n  error: {r['failure']['error']}")
        elif not r["passed"]:
            _say(f"FAILED {r['id']} ({r['mode']}): {r['message']}")

