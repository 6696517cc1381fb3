"""A run: one directory with its services and fault links; closing it stops everything and cleans up.

Services obey ``docs/contracts.md`` (``--ready-file``, ``--log-file``, port 0). Every run is recorded in
the registry so that ``workbook down`` can reap it if its owner dies without closing it.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from workbook import registry
from workbook._exceptions import ServiceError
from workbook.links import Links
from workbook.service import Health, Service

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
