"""One Jepsen-style history for every client and for the nemesis.

Each operation is an ``invoke`` followed by ``ok``, ``fail`` (it certainly had no effect) or ``info``
(outcome unknown: a deadline after the write may have committed). Only ``ok`` counts as acknowledged.
The *client* decides fail or info from the typed error it got (see :func:`workbook.kvcluster.kv_outcome`,
:func:`workbook.rpcclient.rpc_outcome`); the history never reads error texts. Faults are operations
of process ``nemesis``: a fault's start and its end (heal, resume, restart) share its ``key``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

TYPES = ("invoke", "ok", "fail", "info")
NEMESIS = "nemesis"

# (exception) -> (completion type, value): how a client turns its error into ok / fail / info.
Outcome = Callable[[BaseException], tuple[str, Any]]


@dataclass(frozen=True)
class Op:
    """One line of a history (an invoke, or its completion)."""

    index: int            # position in the history
    op: int               # operation id shared by an invoke and its completion
    type: str             # invoke | ok | fail | info
    process: str          # the client (worker) that issued it, or "nemesis"
    f: str                # the operation: write, read, request, kill, partition, ...
    node: str             # where it was sent (a node, an upstream, a link)
    key: Any              # what it is about: a key, a request id, a fault id
    value: Any            # the argument on invoke; the result on completion
    time: float           # seconds since the history started (monotonic)
    wall: float           # unix time
    version: str = ""
    error: str = ""


def unknown_outcome(exc: BaseException) -> tuple[str, Any]:
    """The safe default: an error says nothing about whether the operation took effect."""
    return "info", None


class History:
    """Append-only and thread-safe; ``operations()`` joins invokes with completions, ``to_pandas()``."""

    def __init__(self, ops: Iterable[Op] = (), t0: float | None = None, wall0: float | None = None) -> None:
        self.events: list[Op] = list(ops)
        self.t0 = time.monotonic() if t0 is None else t0
        self.wall0 = time.time() if wall0 is None else wall0
        self._lock = threading.Lock()
        self._next_op = 1 + max((e.op for e in self.events), default=-1)

    # -- recording -----------------------------------------------------------------------------------------
    def invoke(self, process: str, f: str, *, node: str = "", key: Any = None, value: Any = None) -> int:
        """Record the start of an operation; returns its id for :meth:`complete`."""
        with self._lock:
            op = self._next_op
            self._next_op += 1
            self._append(op, "invoke", process, f, node, key, value)
        return op

    def complete(self, op: int, type_: str, value: Any = None, *, version: str = "", error: str = "") -> Op:
        """Record how operation *op* ended: ``ok``, ``fail`` or ``info``."""
        if type_ not in TYPES[1:]:
            raise ValueError(f"completion type must be ok, fail or info, not {type_!r}")
        with self._lock:
            inv = next(e for e in reversed(self.events) if e.op == op and e.type == "invoke")
            return self._append(op, type_, inv.process, inv.f, inv.node, inv.key, value,
                                version=version, error=error)

    def _append(self, op: int, type_: str, process: str, f: str, node: str, key: Any, value: Any,
                **extra: str) -> Op:
        event = Op(len(self.events), op, type_, process, f, node, key, value,
                   time.monotonic() - self.t0, time.time(), **extra)
        self.events.append(event)
        return event

    async def record(self, process: str, f: str, call: Callable[[], Awaitable[Any]], *, node: str = "",
                     key: Any = None, value: Any = None, outcome: Outcome = unknown_outcome,
                     result: Callable[[Any], tuple[Any, str]] | None = None, reraise: bool = False) -> Op:
        """Invoke, await *call*, complete. ``result(r)`` gives (value, version) of a success (default: r);
        ``outcome(exc)`` decides (type, value) of a failure. Returns the completion; with *reraise*, a
        failure is recorded and then raised to the caller."""
        op = self.invoke(process, f, node=node, key=key, value=value)
        try:
            got = await call()
        except Exception as exc:
            type_, val = outcome(exc)
            error = "" if type_ == "ok" else f"{type(exc).__name__}: {exc}"
            done = self.complete(op, type_, val, error=error)
            if reraise:
                raise
            return done
        val, version = result(got) if result is not None else (got, "")
        return self.complete(op, "ok", val, version=version)

    # -- reading -------------------------------------------------------------------------------------------
    def operations(self, *, process: str | None = None, f: str | None = None) -> list[dict[str, Any]]:
        """One row per operation, invoke joined with its completion (``type`` pending if none came):
        ``value`` is the invoke's argument, ``result`` the completion's value."""
        with self._lock:
            events = list(self.events)
        rows: dict[int, dict[str, Any]] = {}
        for e in events:
            if e.type == "invoke":
                if (process is None or e.process == process) and (f is None or e.f == f):
                    rows[e.op] = {"op": e.op, "process": e.process, "f": e.f, "node": e.node, "key": e.key,
                                  "value": e.value, "result": None, "type": "pending", "invoke_time": e.time,
                                  "invoke_wall": e.wall, "complete_time": None, "complete_wall": None,
                                  "version": "", "error": ""}
            elif e.op in rows:
                rows[e.op].update(type=e.type, result=e.value, complete_time=e.time, complete_wall=e.wall,
                                  version=e.version, error=e.error)
        return list(rows.values())

    def counts(self, *, process: str | None = None, f: str | None = None) -> dict[str, int]:
        """How many operations ended ok / fail / info / pending."""
        out = {"ok": 0, "fail": 0, "info": 0, "pending": 0}
        for row in self.operations(process=process, f=f):
            out[row["type"]] += 1
        return out

    def faults(self) -> list[dict[str, Any]]:
        """The nemesis's faults as intervals: kind, node, start (when it took effect), end (when it was
        undone; None while still in force)."""
        out: dict[Any, dict[str, Any]] = {}
        for row in self.operations(process=NEMESIS):
            end = isinstance(row["value"], dict) and row["value"].get("end")
            if end:
                if row["key"] in out:
                    out[row["key"]]["end"] = row["complete_time"] or row["invoke_time"]
            else:
                out[row["key"]] = {"fault": row["key"], "kind": row["f"], "node": row["node"],
                                   "start": row["complete_time"] or row["invoke_time"], "end": None,
                                   "type": row["type"], "params": row["value"]}
        return list(out.values())

    def at(self, wall: float) -> float:
        """The history time (seconds since its start) of unix time *wall*."""
        return wall - self.wall0

    def to_pandas(self) -> Any:
        """Every event as a DataFrame (one row per invoke or completion)."""
        import pandas as pd

        with self._lock:
            return pd.DataFrame([asdict(e) for e in self.events])

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the history as JSON lines (one event a line; a header line with the clocks)."""
        with self._lock:
            events = list(self.events)
        with open(path, "w") as out:
            out.write(json.dumps({"t0_wall": self.wall0}) + "\n")
            for e in events:
                out.write(json.dumps(asdict(e), default=repr) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        """Read a history written by :meth:`save`."""
        names = {f.name for f in fields(Op)}
        with open(path) as src:
            head = json.loads(src.readline())
            ops = [Op(**{k: v for k, v in json.loads(line).items() if k in names})
                   for line in src if line.strip()]
        return cls(ops, t0=0.0, wall0=head["t0_wall"])

    def __len__(self) -> int:
        return len(self.events)
