"""Process supervision: start services as child processes, wait until they are ready, fault and stop them.

A :class:`Run` owns a run directory, the services started in it and its fault links. Services obey
``docs/contracts.md`` (``--ready-file``, ``--log-file``, port 0). Every child is started through a
small launcher that arms ``PR_SET_PDEATHSIG`` and then execs the service, from one long-lived spawner
thread (the death signal follows the thread that forked, not the process), and is recorded under the
run directory so that ``workbook down`` can reap it if its owner dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbook import registry
from workbook.links import Links

_LAUNCHER = str(Path(__file__).with_name("_spawn.py"))
_POLL = 0.01

Health = Callable[["Service"], bool]


class ServiceError(RuntimeError):
    """A service did not start, did not become ready, or could not be controlled."""


# ---------------------------------------------------------------------------------------------------
# spawning


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


# ---------------------------------------------------------------------------------------------------
# health


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


# ---------------------------------------------------------------------------------------------------
# services


def _proc_state(pid: int) -> str:
    """The one-letter state of /proc/PID/stat ("R", "S", "T"...), "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2]


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
        """Poll until the ready file exists, the process lives and health passes; kill it on timeout."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        why = ""
        while True:
            ready, why = self._probe()
            if ready:
                return self
            if time.monotonic() >= deadline:
                err = self._error(f"was not ready within {timeout:g} s: {why}")
                self.kill()
                raise err
            time.sleep(_POLL)

    async def await_ready(self, ready_timeout: float | None = None) -> Service:
        """:meth:`wait_ready` without blocking the event loop (health checks run in a worker thread)."""
        timeout = self.ready_timeout if ready_timeout is None else ready_timeout
        deadline = time.monotonic() + timeout
        while True:
            ready, why = await asyncio.to_thread(self._probe)
            if ready:
                return self
            if time.monotonic() >= deadline:
                err = self._error(f"was not ready within {timeout:g} s: {why}")
                await asyncio.to_thread(self.kill)
                raise err
            await asyncio.sleep(_POLL)

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
        deadline = time.monotonic() + timeout
        while self.alive and (_proc_state(self.pid) == "T") != stopped:
            if time.monotonic() > deadline:
                raise ServiceError(f"service {self.name!r} did not {'stop' if stopped else 'continue'} "
                                   f"within {timeout:g} s")
            time.sleep(0.001)

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
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

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


# ---------------------------------------------------------------------------------------------------
# runs

_open_runs: set[Run] = set()  # strong: an unreferenced but unclosed run is still closed at exit
_atexit_registered = False


def _close_open_runs() -> None:
    for run in list(_open_runs):
        try:
            run.close(grace=2.0)
        except Exception:
            pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "run"


class Run:
    """A run directory with its services and fault links; :meth:`close` stops all and cleans up.

    Create with :meth:`create`. The directory is temporary (removed on close) unless it was given
    (``directory=``), ``keep=True``, or ``$WORKBOOK_RUN_BASE`` is set (the runner sets it so a notebook's
    logs land in its outputs; only the data directories are removed then).
    """

    def __init__(self, name: str, run_dir: Path, *, temporary: bool, keep: bool) -> None:
        self.name = name
        self.dir = run_dir
        self.temporary = temporary
        self.keep = keep
        self.services: dict[str, Service] = {}
        self._links: Links | None = None
        self._lock = threading.RLock()
        self.closed = False
        run_id = f"{_safe(name)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        remove_data = [] if keep or temporary else [str(self.dir / "data")]
        self.record = registry.RunRecord(run_id, self.dir, registry.Owner.current(),
                                         remove_dir=temporary and not keep, remove_paths=remove_data)
        self.record.save()
        (self.dir / "run.json").write_text(json.dumps(
            {"run_id": run_id, "name": name, "owner": vars(self.record.owner), "created_at": time.time()}))
        global _atexit_registered
        _open_runs.add(self)
        if not _atexit_registered:
            atexit.register(_close_open_runs)
            _atexit_registered = True

    @classmethod
    def create(cls, name: str = "run", *, directory: str | os.PathLike[str] | None = None,
               base: str | os.PathLike[str] | None = None, keep: bool = False) -> Run:
        """A new run in *directory*, or in a fresh directory under *base*, ``$WORKBOOK_RUN_BASE`` or tmp."""
        if directory is not None:
            run_dir = Path(directory)
            run_dir.mkdir(parents=True, exist_ok=True)
            return cls(name, run_dir.resolve(), temporary=False, keep=keep)
        env_base = os.environ.get("WORKBOOK_RUN_BASE")
        parent = Path(base or env_base or registry.user_base())
        parent.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix=f"{_safe(name)}-", dir=parent)).resolve()
        return cls(name, run_dir, temporary=not (base or env_base), keep=keep)

    # services --------------------------------------------------------------------------------------
    def _new_service(self, name: str, argv: Sequence[str], health: Health | None, ready_timeout: float,
                     env: dict[str, str] | None, ready_file: bool, log_file: bool) -> Service:
        if self.closed:
            raise ServiceError(f"run {self.name!r} is closed")
        if not argv:
            raise ServiceError(f"service {name!r}: empty command line")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ServiceError(f"service name {name!r}: use letters, digits, '_', '.', '-'")
        with self._lock:
            old = self.services.get(name)
            if old is not None and old.alive:
                raise ServiceError(f"service {name!r} is already running in run {self.name!r}")
            svc = Service(self, name, list(argv), health=health, ready_timeout=ready_timeout, env=env,
                          ready_file=ready_file, log_file=log_file)
            self.services[name] = svc
        return svc

    def start(self, name: str, argv: Sequence[str], *, health: Health | None = None,
              ready_timeout: float = 15.0, env: dict[str, str] | None = None, wait: bool = True,
              ready_file: bool = True, log_file: bool = True) -> Service:
        """Start *argv* as service *name* (``--ready-file``/``--log-file`` appended) and wait until ready.

        Ready means: the ready file exists and names the process, the process is alive, and *health*
        (if given) returns true, all within *ready_timeout* seconds; otherwise the process is killed and
        :class:`ServiceError` names the service, its exit code and the tail of its output and log.
        """
        svc = self._new_service(name, argv, health, ready_timeout, env, ready_file, log_file)
        return svc.start(wait=wait)

    async def astart(self, name: str, argv: Sequence[str], *, health: Health | None = None,
                     ready_timeout: float = 15.0, env: dict[str, str] | None = None, wait: bool = True,
                     ready_file: bool = True, log_file: bool = True) -> Service:
        """:meth:`start` without blocking the event loop (``wait=False``: launch only; later
        ``await svc.await_ready()``)."""
        svc = self._new_service(name, argv, health, ready_timeout, env, ready_file, log_file)
        await asyncio.to_thread(svc.start, wait=False)
        return await svc.await_ready() if wait else svc

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def _record(self, svc: Service) -> None:
        assert svc.proc is not None
        registry.record_process(self.dir, svc.name, svc.proc.pid, svc.full_argv())

    def data_dir(self, name: str) -> Path:
        """``<run>/data/<name>``, created if missing (the same path on every call: restarts reuse it)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"data dir name {name!r}: use letters, digits, '_', '.', '-'")
        path = self.dir / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, name: str) -> Path:
        """A file path inside the run directory (for a notebook's own artefacts)."""
        return self.dir / name

    @property
    def links(self) -> Links:
        """The run's fault links (started on first use, closed with the run)."""
        with self._lock:
            if self.closed:
                raise ServiceError(f"run {self.name!r} is closed")
            if self._links is None:
                self._links = Links()
            return self._links

    # teardown --------------------------------------------------------------------------------------
    def close(self, grace: float = 5.0) -> None:
        """SIGTERM every service, SIGKILL what is left after *grace*, close links, remove temp dirs."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        services = list(self.services.values())
        for svc in services:
            svc.terminate()
        deadline = time.monotonic() + grace
        for svc in services:
            if svc.proc is None:
                continue
            try:
                svc.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.kill()
        if self._links is not None:
            self._links.close()
        if self.temporary and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif not self.keep:
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        self.record.delete()
        _open_runs.discard(self)

    async def aclose(self, grace: float = 5.0) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close, grace)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Run {self.name} {self.dir} services={sorted(self.services)}>"
