"""Launching service processes: every child is forked from one long-lived spawner thread through a small
launcher that arms ``PR_SET_PDEATHSIG`` and then execs the service, so children die with their owner.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbook._exceptions import ServiceError

_LAUNCHER = str(Path(__file__).with_name("_spawn.py"))




class _Spawner:
    """One daemon thread that performs every ``Popen`` of this process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so children must not be
    forked from short-lived threads (``asyncio.to_thread`` workers, executor threads). This thread lives
    as long as the process.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._loop, name="workbook-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)

    def call(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return fn()
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        return fut.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _get_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner._thread.is_alive():
            _spawner = _Spawner()
        return _spawner


def resolve_program(program: str) -> str:
    """Find *program*: as given if it has a slash, else next to this interpreter (the venv), else on PATH."""
    if os.sep in program:
        return program
    beside = Path(sys.executable).parent / program
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(program)
    if found is None:
        raise ServiceError(f"cannot start {program!r}: not found next to {sys.executable} nor on PATH")
    return found


def spawn(argv: Sequence[str], *, out_path: Path, env: dict[str, str] | None = None,
          cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
    """Start *argv* through the death-signal launcher from the spawner thread; output goes to *out_path*."""
    argv = [resolve_program(argv[0]), *argv[1:]]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-I", "-S", _LAUNCHER, str(os.getpid()), "--", *argv]

    def _popen() -> subprocess.Popen[bytes]:
        with open(out_path, "ab") as out:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=full_env, cwd=cwd, start_new_session=True, close_fds=True)

    return _get_spawner().call(_popen)



def proc_state(pid: int) -> str:
    """The one-letter state of /proc/PID/stat ("R", "S", "T"...), "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2]


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds spent, user + system; resident set size in bytes) of process *pid* from /proc;
    (nan, 0) if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return float("nan"), 0
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
