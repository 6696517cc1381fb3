"""``workbook run``: execute each (notebook, mode) through papermill, judge it, and write the report.

Every execution is a child process (``workbook.runner._papermill``) in its own process group, so the
notebook's whole-run time limit can be enforced by killing its tree (papermill, kernel, services); afterwards
the runs its kernel registered are reaped. The verdict comes from the JSON sidecar the notebook's
verdict cell writes; a failure is described from the output notebook itself (the failing cell's
source and error), since papermill's per-cell status is unreliable after a kill. What the run writes
besides the executed notebooks: :mod:`summaries`, :mod:`junit`, :mod:`site` and :mod:`pages`; the part
of the plan a machine runs: :mod:`shard`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
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
from workbook.runner import catalog, pages, profiles, shard, site
from workbook.runner.catalog import CatalogError, NotebookInfo
from workbook.runner.profiles import Profile, ProfileError
from workbook.runner.report import write_report
from workbook.runner.summaries import figures_text, repeat_counts

KERNEL = "python3"
_print_lock = threading.Lock()


@dataclass
class Job:
    """One execution of one notebook in one mode."""

    info: NotebookInfo
    mode: str
    repeat: int
    stem: str
    parameters: dict[str, Any]
    timeout: float
    repeats: int = 1
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        """Its (notebook, mode): the unit a shard takes whole, ``kv-01[incident]``."""
        return shard.unit(self.info.id, self.mode)


def _say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


# --------------------------------------------------------------------------------------------------
# planning


def plan(infos: list[NotebookInfo], ids: list[str], mode: str, profile: Profile, repeat: int | None,
         timeout: float | None) -> tuple[list[Job], list[dict[str, str]]]:
    """The jobs to run and the (notebook, mode) pairs skipped; RunnerError on a bad request.

    *repeat* / *timeout* None: the profile's (a notebook's section wins over the global value)."""
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
            repeats = repeat if repeat is not None else profile.repeat(info.id)
            for r in range(1, repeats + 1):
                stem = pages.stem(info.id, m, r, repeats)
                values = {**base, "mode": m}
                if "profile" in declared:
                    values["profile"] = profile.name
                limit = timeout if timeout is not None else profile.timeout(info.id)
                jobs.append(Job(info, m, r, stem, values, limit, repeats))
    return jobs, skipped


def select_shard(jobs: list[Job], index: int, total: int,
                 durations: dict[str, float]) -> tuple[list[Job], list[str]]:
    """The jobs of shard *index* of *total* (1-based) and every unit of the plan, in plan order."""
    units = list(dict.fromkeys(job.unit for job in jobs))
    mine = set(shard.partition(units, total, durations)[index - 1])
    return [job for job in jobs if job.unit in mine], units


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
    row = {
        "id": job.info.id, "title": job.info.title, "family": job.info.family, "source": job.info.source,
        "defects": list(job.info.defects), "mode": job.mode, "repeat": job.repeat,
        "verdict": outcome, "passed": outcome == "pass", "message": message,
        "reproduced": side.get("reproduced") if side else None,
        "duration": round(duration, 2), "figures": (side or {}).get("figures", {}),
        "failure": failure if outcome != "pass" else None,
        "timeout": job.timeout, "parameters": job.parameters,
        "paths": {
            "notebook": nb_out.name if nb_out.exists() else None,
            "html": None,
            "sidecar": f"{job.stem}.verdict.json" if side else None,
            "log": log_path.name, "runs": str(run_base.relative_to(out)),
        },
        "reaped": [p["name"] for rep in reaped for p in rep.killed],
    }
    if render and nb_out.exists():
        seconds, render_error = pages.render(nb_out, html_path, pages.bar(row, job.info.modes, job.repeats))
        row["page_seconds"] = round(seconds, 2)
        if render_error:
            row["html_error"] = render_error
        else:
            row["paths"]["html"] = html_path.name
    job.result = row
    return row


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
        if args.jobs < 1 or (args.repeat is not None and args.repeat < 1):
            raise RunnerError("--jobs and --repeat must be at least 1")
        if args.timeout is not None and args.timeout <= 0:
            raise RunnerError("--timeout must be positive")
        part = shard.parse(args.shard) if args.shard is not None else None
        durations = shard.load_durations(args.durations) if args.durations is not None else {}
        profile = profiles.load(args.profile)
        infos = catalog.discover(notebooks_dir)
        jobs, skipped = plan(infos, args.ids, args.mode, profile, args.repeat, args.timeout)
        shard_doc = None
        if part is not None:
            jobs, units = select_shard(jobs, *part, durations)
            shard_doc = {"index": part[0], "total": part[1], "units": units,
                         "mine": list(dict.fromkeys(job.unit for job in jobs))}
    except (RunnerError, ProfileError, CatalogError) as exc:
        sys.stderr.write(f"workbook: error: {exc}\n")
        return 2
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    out = (args.output or default_output(run_id)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    total = len(jobs)
    where = f", shard {part[0]}/{part[1]}" if part else ""
    _say(f"workbook run {run_id}: {total} execution(s), profile {profile.name}{where}, jobs {args.jobs} "
         f"-> {out}")
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
    order = {(job.info.id, job.mode, job.repeat): n for n, job in enumerate(jobs)}
    rows.sort(key=lambda r: order[r["id"], r["mode"], r["repeat"]])
    ok = bool(rows) and all(r["passed"] for r in rows) and len(rows) == total and not interrupted
    if total == 0 and not interrupted:
        ok = True  # nothing to run is not a failure (e.g. no notebooks yet)
    status = 0 if ok else (130 if interrupted else 1)
    doc = {"run_id": run_id, "profile": profile.name, "profile_path": str(profile.path),
           "notebooks_dir": str(notebooks_dir), "mode": args.mode,
           "repeat": max((job.repeats for job in jobs), default=args.repeat or 1),
           "started": started, "finished": time.time(), "exit_status": status, "results": rows,
           "skipped": skipped, "repeat_counts": repeat_counts(rows)}
    if shard_doc is not None:
        doc["shard"] = shard_doc
    seconds = write_report(out, doc)
    _print_table(rows, doc)
    pages_seconds = sum(r.get("page_seconds", 0.0) for r in rows)
    _say(f"report: {out / site.INDEX} (pages {pages_seconds:.1f} s, index and junit {seconds:.2f} s)")
    return status



def _print_table(rows: list[dict[str, Any]], doc: dict[str, Any]) -> None:
    lines = [("id", "mode", "verdict", "reproduced", "seconds", "key figures")]
    for r in rows:
        mode = r["mode"] + ("" if r["repeat"] == 1 else f" #{r['repeat']}")
        lines.append((r["id"], mode, r["verdict"], str(r["reproduced"]), f"{r['duration']:.1f}",
                      figures_text(r["figures"])))
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

