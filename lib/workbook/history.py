"""Jepsen-style operation histories: every operation is an ``invoke`` followed by ``ok``, ``fail`` or
``info`` (outcome unknown: e.g. a deadline after the write may have committed). Only ``ok`` counts as
acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

# Server messages that say a write definitely did not happen.
_DEFINITE = ("nothing was written", "not serving yet", "still recovering", "not open")


@dataclass
class Event:
    """One line of a history."""

    index: int
    op: int               # operation id shared by an invoke and its completion
    type: str             # invoke | ok | fail | info
    process: str          # the client (worker) that issued it
    node: str             # the node it was sent to
    f: str                # write | read | delete
    key: str
    value: Any
    time: float           # seconds since the history started (monotonic)
    wall: float           # unix time
    version: str = ""
    error: str = ""


def classify(exc: BaseException, f: str) -> str:
    """``fail`` when the error proves the operation had no effect, else ``info`` (unknown).

    Reads never change state, so any failed read is ``fail``.
    """
    if f == "read":
        return "fail"
    code = getattr(exc, "code", "")
    details = getattr(exc, "details", "") or ""
    if code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"):
        return "fail"
    if code == "UNAVAILABLE" and any(m in details for m in _DEFINITE):
        return "fail"
    return "info"


class History:
    """Thread-safe, append-only; ``to_pandas()`` for tables, ``operations()`` for one row per op."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._next_op = 0

    def invoke(self, process: str, node: str, f: str, key: str, value: Any = None) -> int:
        with self._lock:
            op = self._next_op
            self._next_op += 1
            self._append(op, "invoke", process, node, f, key, value)
        return op

    def complete(self, op: int, type_: str, value: Any = None, *, version: str = "", error: str = "") -> None:
        if type_ not in ("ok", "fail", "info"):
            raise ValueError(f"completion type must be ok, fail or info, not {type_!r}")
        with self._lock:
            inv = next(e for e in reversed(self.events) if e.op == op and e.type == "invoke")
            self._append(op, type_, inv.process, inv.node, inv.f, inv.key,
                         value if value is not None or inv.f == "read" else inv.value,
                         version=version, error=error)

    def _append(self, op: int, type_: str, process: str, node: str, f: str, key: str, value: Any,
                **extra: str) -> None:
        self.events.append(Event(len(self.events), op, type_, process, node, f, key, value,
                                 time.monotonic() - self.t0, time.time(), **extra))

    async def record(self, process: str, node: str, f: str, key: str, value: Any,
                     call: Callable[[], Awaitable[Any]]) -> Event:
        """Invoke, await *call*, complete: ``ok`` with the result's value/version, or fail/info.

        A read of a missing key is ``ok`` with value None.
        """
        op = self.invoke(process, node, f, key, value)
        try:
            result = await call()
        except Exception as exc:
            code = getattr(exc, "code", "")
            if f == "read" and code == "NOT_FOUND":
                self.complete(op, "ok", None)
            else:
                self.complete(op, classify(exc, f), error=f"{code or type(exc).__name__}: "
                              f"{getattr(exc, 'details', str(exc))}")
            return self.events[-1]
        version = getattr(result, "version", None)
        vtext = f"{version.wall_ms}.{version.logical}.{version.node}" if version is not None else ""
        got = getattr(result, "text", None) if f == "read" else None
        self.complete(op, "ok", got, version=vtext)
        return self.events[-1]

    def operations(self) -> list[dict[str, Any]]:
        """One row per operation: invoke and completion joined (``type`` = ok/fail/info, or
        ``pending`` if it never completed)."""
        with self._lock:
            events = list(self.events)
        rows: dict[int, dict[str, Any]] = {}
        for e in events:
            if e.type == "invoke":
                rows[e.op] = {"op": e.op, "process": e.process, "node": e.node, "f": e.f, "key": e.key,
                              "value": e.value, "type": "pending", "invoke_time": e.time,
                              "invoke_wall": e.wall, "complete_time": None, "complete_wall": None,
                              "version": "", "error": ""}
            else:
                row = rows[e.op]
                row.update(type=e.type, complete_time=e.time, complete_wall=e.wall, version=e.version,
                           error=e.error)
                if e.f == "read":
                    row["value"] = e.value
        return list(rows.values())

    def counts(self) -> dict[str, int]:
        """How many operations ended ok / fail / info / pending."""
        out = {"ok": 0, "fail": 0, "info": 0, "pending": 0}
        for row in self.operations():
            out[row["type"]] += 1
        return out

    def to_pandas(self) -> Any:
        """Every event as a DataFrame (one row per invoke/completion)."""
        import pandas as pd

        with self._lock:
            return pd.DataFrame([asdict(e) for e in self.events])

    def __len__(self) -> int:
        return len(self.events)
