"""One service process of a run: its command line, ready-file info, health, logs, and the process
faults (kill, stop, pause, resume, restart on the same address and data directory).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbook._exceptions import ConditionTimeout, ServiceError
from workbook.jsonlines import read_records
from workbook.launch import proc_state, proc_usage, spawn
from workbook.waiting import wait_until, wait_until_sync

if TYPE_CHECKING:
    from workbook.run import Run

_POLL = 0.01

Health = Callable[["Service"], bool]



def http_health(path: str = "/health", *, timeout: float = 1.0, endpoint: str = "http") -> Health:
    """A health check: ``GET <service's http endpoint><path>`` answers 2xx within *timeout* seconds.

    The base URL is ``info[endpoint]`` from the ready file, or ``http://<listen>/`` if it has none.
    """

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy

    def check(svc: Service) -> bool:
        base = svc.info.get(endpoint) or f"http://{svc.address}/"
        url = base.rstrip("/") + "/" + path.lstrip("/")
        try:
            with opener.open(url, timeout=timeout) as resp:
                return 200 <= resp.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    check.__name__ = f"http_health({path!r})"
    return check




def _tail(path: Path, lines: int = 8, max_chars: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    tail = " | ".join(line.rstrip() for line in text.splitlines()[-lines:] if line.strip())
    return tail[-max_chars:]


def _replace_listen(argv: list[str], address: str) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--listen" and i + 1 < len(out):
            out[i + 1] = address
            return out
        if arg.startswith("--listen="):
            out[i] = f"--listen={address}"
            return out
    return out


class Service:
    """A service process of a :class:`Run`: its ready-file info, logs, and the process faults."""

    def __init__(self, run: Run, name: str, argv: list[str], *, health: Health | None,
                 ready_timeout: float, env: dict[str, str] | None, ready_file: bool, log_file: bool) -> None:
        self.run = run
        self.name = name
        self.argv = list(argv)
        self.health = health
        self.ready_timeout = ready_timeout
        self.env = env
        self.use_ready_file = ready_file
        self.use_log_file = log_file
        self.info: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.generation = 0
        self._lock = threading.RLock()

    # paths -----------------------------------------------------------------------------------------
    @property
    def ready_path(self) -> Path:
        return self.run.dir / f"{self.name}.ready.json"

    @property
    def log_path(self) -> Path:
        return self.run.dir / f"{self.name}.log.jsonl"

    @property
    def out_path(self) -> Path:
        return self.run.dir / f"{self.name}.out"

    # state -----------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServiceError(f"service {self.name!r} was never started")
        return self.proc.pid

    def usage(self) -> tuple[float, int]:
        """(CPU seconds the process has spent, its resident memory in bytes), read from /proc."""
        return proc_usage(self.pid)

    @property
    def address(self) -> str:
        """The bound ``HOST:PORT`` reported in the ready file (``info["listen"]``)."""
        try:
            return self.info["listen"]
        except KeyError:
            raise ServiceError(f"service {self.name!r} reported no listen address") from None

    def url(self, kind: str = "http") -> str:
        """An endpoint from the ready file (``"http"``, ``"ws"``, ``"grpc"``...)."""
        try:
            return self.info[kind]
        except KeyError:
            raise ServiceError(f"service {self.name!r} has no {kind!r} endpoint; it reported "
                               f"{sorted(self.info)}") from None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def full_argv(self) -> list[str]:
        extra = []
        if self.use_ready_file:
            extra += ["--ready-file", str(self.ready_path)]
        if self.use_log_file:
            extra += ["--log-file", str(self.log_path)]
        return [*self.argv, *extra]

    # lifecycle -------------------------------------------------------------------------------------
    def _launch(self) -> None:
        self.ready_path.unlink(missing_ok=True)
        # Until the new ready file arrives, keep the old endpoints: a restart pins the listen address.
        self.info = {k: v for k, v in self.info.items() if k not in ("pid", "started_at")}
        self.paused = False
        argv = self.full_argv()
        with self.out_path.open("ab") as out:
            out.write(f"--- workbook: start #{self.generation + 1}: {' '.join(argv)}\n".encode())
        self.proc = spawn(argv, out_path=self.out_path, env=self.env)
        self.generation += 1
        self.run._record(self)

    def _probe(self) -> tuple[bool, str]:
        """One readiness probe: (ready?, why not). Raises ServiceError if the process has exited."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise self._error(f"exited with code {code} before it was ready")
        if self.use_ready_file:
            try:
                info = json.loads(self.ready_path.read_text())
            except (OSError, ValueError):
                return False, "no ready file yet"
            if info.get("pid") not in (None, self.proc.pid):
                return False, f"ready file names pid {info.get('pid')}, not {self.proc.pid}"
            self.info = info
        else:
            self.info = {**self.info, "name": self.name, "pid": self.proc.pid}
        if self.health is not None and not self.health(self):
            return False, f"health check {getattr(self.health, '__name__', 'health')} not passing"
        return True, ""

    def _error(self, what: str) -> ServiceError:
        code = self.returncode
        state = f"exit code {code}" if code is not None else "still running"
        out_tail = _tail(self.out_path) or "(empty)"
        log_tail = _tail(self.log_path, lines=5) or "(empty)"
        return ServiceError(f"service {self.name!r} {what} ({state}; argv: {' '.join(self.argv)}); "
                            f"output {self.out_path}: {out_tail}; log {self.log_path}: {log_tail}")

    def wait_ready(self, timeout: float | None = None) -> Service:
        """Wait until the ready file exists, the process lives and health passes; kill it on timeout."""
        timeout = self.ready_timeout if timeout is None else timeout
        why = [""]

        def ready() -> bool:
            ok, why[0] = self._probe()
            return ok

        try:
            wait_until_sync(ready, timeout, lambda: why[0], poll=_POLL)
        except ConditionTimeout:
            err = self._error(f"was not ready within {timeout:g} s: {why[0]}")
            self.kill()
            raise err from None
        return self

    async def await_ready(self, ready_timeout: float | None = None) -> Service:
        """:meth:`wait_ready` without blocking the event loop (health checks run in a worker thread)."""
        timeout = self.ready_timeout if ready_timeout is None else ready_timeout
        why = [""]

        async def ready() -> bool:
            ok, why[0] = await asyncio.to_thread(self._probe)
            return ok

        try:
            await wait_until(ready, timeout, lambda: why[0], poll=_POLL)
        except ConditionTimeout:
            err = self._error(f"was not ready within {timeout:g} s: {why[0]}")
            await asyncio.to_thread(self.kill)
            raise err from None
        return self

    def start(self, *, wait: bool = True) -> Service:
        with self._lock:
            if self.alive:
                raise ServiceError(f"service {self.name!r} is already running (pid {self.pid})")
            self._launch()
        return self.wait_ready() if wait else self

    def signal(self, sig: int) -> None:
        """Send *sig* to the service process (no-op once it has exited)."""
        if self.alive:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> int | None:
        """SIGKILL and wait; returns the exit status."""
        if self.proc is None:
            return None
        self.signal(signal.SIGKILL)
        self.paused = False
        return self.proc.wait()

    def terminate(self) -> None:
        """Send SIGTERM (waking the process if paused) without waiting."""
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to *grace* seconds, then SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return self.kill()

    def _await_state(self, stopped: bool, timeout: float = 5.0) -> None:
        try:
            wait_until_sync(lambda: not self.alive or (proc_state(self.pid) == "T") == stopped, timeout,
                            "", poll=0.001)
        except ConditionTimeout:
            raise ServiceError(f"service {self.name!r} did not {'stop' if stopped else 'continue'} "
                               f"within {timeout:g} s") from None

    def pause(self) -> None:
        """SIGSTOP, and wait until the kernel has stopped it: it hangs with its sockets open (hung peer)."""
        self.signal(signal.SIGSTOP)
        self.paused = True
        self._await_state(stopped=True)

    def resume(self) -> None:
        """SIGCONT, and wait until it runs again."""
        self.signal(signal.SIGCONT)
        self.paused = False
        self._await_state(stopped=False)

    def restart(self, *, grace: float = 5.0, wait: bool = True,
                ready_timeout: float | None = None) -> Service:
        """Stop if running, then start the same argv on the same bound address and data directory."""
        with self._lock:
            if self.alive:
                self.stop(grace)
            if "listen" in self.info:
                self.argv = _replace_listen(self.argv, self.info["listen"])
            self._launch()
        return self.wait_ready(ready_timeout) if wait else self

    async def arestart(self, *, grace: float = 5.0, ready_timeout: float | None = None) -> Service:
        """:meth:`restart` without blocking the event loop."""
        await asyncio.to_thread(self.restart, grace=grace, wait=False)
        return await self.await_ready(ready_timeout)

    async def astop(self, grace: float = 5.0) -> int | None:
        """:meth:`stop` without blocking the event loop."""
        return await asyncio.to_thread(self.stop, grace)

    async def akill(self) -> int | None:
        """:meth:`kill` without blocking the event loop."""
        return await asyncio.to_thread(self.kill)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to exit on its own; returns the exit status (TimeoutExpired on timeout)."""
        return None if self.proc is None else self.proc.wait(timeout)

    def logs(self) -> list[dict[str, Any]]:
        """The JSON-lines log records so far (a partly written last line is skipped)."""
        return read_records(self.log_path)

    def output(self) -> str:
        """Captured stdout/stderr (tracebacks land here)."""
        try:
            return self.out_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.alive else f"exited {self.returncode}")
        addr = self.info.get("listen", "?")
        return f"<Service {self.name} {addr} pid={self.proc.pid if self.proc else None} {state}>"

