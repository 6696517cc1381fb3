"""The per-user registry of live runs, and reaping what a dead owner left behind (``workbook down``).

Every :class:`~workbook.run.Run` registers itself here (owner pid + /proc start time, run
directory) and appends each process it starts to ``<run dir>/processes.jsonl`` (pid + start time +
argv). A process is only ever signalled after its /proc start time matches the record, so a recycled
pid is never hit. By default only runs whose owner is gone are reaped, so a parallel pytest worker or
a live kernel is never disturbed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbook._exceptions import ConditionTimeout
from workbook.jsonlines import read_records
from workbook.waiting import wait_until_sync

PROCESSES_FILE = "processes.jsonl"


def user_base() -> Path:
    """``$TMPDIR/workbook-$UID``: where temporary run directories live (created on demand)."""
    base = Path(tempfile.gettempdir()) / f"workbook-{os.getuid()}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def registry_dir() -> Path:
    """The registry: ``$WORKBOOK_REGISTRY``, ``$XDG_RUNTIME_DIR/workbook/runs`` or ``user_base()/runs``."""
    if env := os.environ.get("WORKBOOK_REGISTRY"):
        path = Path(env)
    elif (xdg := os.environ.get("XDG_RUNTIME_DIR")) and os.path.isdir(xdg):
        path = Path(xdg) / "workbook" / "runs"
    else:
        path = user_base() / "runs"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def proc_start_time(pid: int) -> int | None:
    """The start time in clock ticks since boot (/proc/PID/stat field 22); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces and parens
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int, start_time: int | None) -> bool:
    """True if *pid* runs and is the same process as the one recorded with *start_time*."""
    return start_time is not None and proc_start_time(pid) == start_time


@dataclass
class Owner:
    """Who created a run: pid plus /proc start time (pid alone could be recycled)."""

    pid: int
    start_time: int | None

    @classmethod
    def current(cls) -> Owner:
        return cls(os.getpid(), proc_start_time(os.getpid()))

    def alive(self) -> bool:
        return is_alive(self.pid, self.start_time)


@dataclass
class RunRecord:
    """A registry entry: the run directory, its owner, and whether reaping removes the directory."""

    run_id: str
    run_dir: Path
    owner: Owner
    remove_dir: bool
    remove_paths: list[str] = field(default_factory=list)

    @property
    def entry_path(self) -> Path:
        return registry_dir() / f"{self.run_id}.json"

    def save(self) -> None:
        doc = {"run_id": self.run_id, "run_dir": str(self.run_dir), "owner": vars(self.owner),
               "remove_dir": self.remove_dir, "remove_paths": self.remove_paths}
        tmp = self.entry_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.entry_path)

    def delete(self) -> None:
        self.entry_path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        try:
            doc = json.loads(path.read_text())
            return cls(doc["run_id"], Path(doc["run_dir"]), Owner(**doc["owner"]), bool(doc["remove_dir"]),
                       list(doc.get("remove_paths", [])))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def record_process(run_dir: Path, name: str, pid: int, argv: list[str]) -> int | None:
    """Append a started process to ``<run_dir>/processes.jsonl``; returns its start time."""
    start = proc_start_time(pid)
    line = json.dumps({"name": name, "pid": pid, "start_time": start, "argv": argv})
    with open(run_dir / PROCESSES_FILE, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return start


def recorded_processes(run_dir: Path) -> list[dict[str, Any]]:
    """The process records of a run directory (unreadable lines are skipped)."""
    return read_records(run_dir / PROCESSES_FILE)


def kill_recorded(run_dir: Path, grace: float = 2.0) -> list[dict[str, Any]]:
    """Stop every still-running recorded process of *run_dir* (SIGTERM, then SIGKILL after *grace*).

    Returns the records that were alive. Identity is checked against the /proc start time before each
    signal; the processes are not our children, so their end is awaited by polling /proc.
    """
    alive = [p for p in recorded_processes(run_dir) if is_alive(p["pid"], p.get("start_time"))]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in alive:
            if is_alive(p["pid"], p["start_time"]):
                try:
                    os.kill(p["pid"], sig)
                    os.kill(p["pid"], signal.SIGCONT)  # a paused process must wake up to die gracefully
                except ProcessLookupError:
                    pass
        with contextlib.suppress(ConditionTimeout):
            wait_until_sync(lambda: not any(is_alive(p["pid"], p["start_time"]) for p in alive),
                            grace if sig == signal.SIGTERM else 5.0, "recorded processes exit", poll=0.01)
    return alive


@dataclass
class ReapReport:
    """What one reaping did for one run."""

    run_id: str
    run_dir: str
    killed: list[dict[str, Any]]
    removed_dir: bool


def reap(*, everything: bool = False, under: Path | None = None) -> list[ReapReport]:
    """Reap registered runs whose owner is dead (all of them with *everything*; only those under *under*)."""
    reports = []
    for entry in sorted(registry_dir().glob("*.json")):
        rec = RunRecord.load(entry)
        if rec is None:
            continue
        if under is not None and not Path(rec.run_dir).resolve().is_relative_to(Path(under).resolve()):
            continue
        if not everything and rec.owner.alive():
            continue
        killed = kill_recorded(rec.run_dir) if rec.run_dir.exists() else []
        removed = False
        if rec.remove_dir:
            shutil.rmtree(rec.run_dir, ignore_errors=True)
            removed = True
        for extra in rec.remove_paths:
            shutil.rmtree(extra, ignore_errors=True)
        rec.delete()
        reports.append(ReapReport(rec.run_id, str(rec.run_dir), killed, removed))
    return reports


def descendants(pid: int) -> list[int]:
    """Every live descendant of *pid* (children first-level first), from one scan of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = [c for p in frontier for c in children.get(p, [])]
        out.extend(nxt)
        frontier = nxt
    return out


def kill_tree(pid: int, wait: float = 10.0) -> list[int]:
    """SIGKILL *pid* and all its descendants and wait until they are gone (or zombies).

    The tree is snapshotted first, so a process reparented by its parent's death is not missed.
    """
    victims = [pid, *descendants(pid)]
    identities = [(v, proc_start_time(v)) for v in victims]
    for victim, start in identities:
        if start is not None and proc_start_time(victim) == start:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
    with contextlib.suppress(ConditionTimeout):
        wait_until_sync(lambda: not any(is_alive(v, s) for v, s in identities), wait, "the tree exits",
                        poll=0.01)
    return victims
