"""Checkers: pure functions of what a run recorded (a :class:`History`, node states, client traces).

Each returns a dict with ``valid`` and its figures, as Jepsen's checkers do, so a verdict cell can
assert on ``valid`` and show the figures. Nothing here talks to a service.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from workbook.history import History


def _version(text: str) -> tuple[int, int, str]:
    """Order of a ``wall_ms.logical.node`` version string (empty: before every version)."""
    if not text:
        return (-1, -1, "")
    wall, logical, node = [*text.split(".", 2), "", ""][:3]
    return (int(wall), int(logical), node)


def set_full(history: History, present: Iterable[str], *, prefix: str = "") -> dict[str, Any]:
    """Unique-key writes (those whose key starts with *prefix*) against the keys found at the end.

    ``lost``: acknowledged (ok) but absent, must be empty. ``unexpected``: present but never attempted,
    or attempted and definitely failed. ``recovered``: outcome unknown (info) and present.
    """
    found = {k for k in present if k.startswith(prefix)}
    by_key: dict[str, str] = {}
    ack_wall: dict[str, float] = {}
    for row in history.operations(f="write"):
        if not str(row["key"]).startswith(prefix):
            continue
        by_key[row["key"]] = row["type"]
        if row["type"] == "ok":
            ack_wall[row["key"]] = row["complete_wall"]
    ok = {k for k, t in by_key.items() if t == "ok"}
    unknown = {k for k, t in by_key.items() if t in ("info", "pending")}
    failed = {k for k, t in by_key.items() if t == "fail"}
    lost = sorted(ok - found)
    unexpected = sorted((found - set(by_key)) | (found & failed))
    recovered = sorted(unknown & found)
    return {"valid": not lost and not unexpected, "attempted": len(by_key), "acknowledged": len(ok),
            "failed": len(failed), "unknown": len(unknown), "lost": lost, "lost_count": len(lost),
            "lost_ack_walls": [ack_wall[k] for k in lost], "unexpected": unexpected,
            "recovered": recovered, "recovered_count": len(recovered)}


def convergence(statuses: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Every node is reachable and reports the same digest (``statuses``: ``KVCluster.status()`` rows)."""
    rows = list(statuses)
    digests = {r["name"]: r.get("digest") for r in rows}
    distinct = {d for d in digests.values() if d}
    reachable = all(digests.values())
    return {"valid": reachable and len(distinct) == 1, "digests": digests, "distinct": len(distinct),
            "unreachable": sorted(n for n, d in digests.items() if not d)}


def last_write(history: History, key: str, final: Mapping[str, str | None]) -> dict[str, Any]:
    """Register of one key written by one sequential writer: every node's final value (*final*: node →
    value) must be the last acknowledged write. ``vanished``: acknowledged writes that came after the
    value a node kept (acknowledged, then lost to an older write)."""
    writes = [r for r in history.operations(f="write") if r["key"] == key and r["type"] == "ok"]
    writes.sort(key=lambda r: r["complete_time"])
    last = writes[-1]["value"] if writes else None
    values = [r["value"] for r in writes]
    vanished: list[dict[str, Any]] = []
    for node, value in final.items():
        if value == last:
            continue
        after = values.index(value) + 1 if value in values else 0
        vanished += [{"node": node, "value": r["value"], "via": r["node"], "version": r["version"],
                      "acked_at": r["complete_time"]} for r in writes[after:]]
    return {"valid": all(v == last for v in final.values()), "acknowledged": len(writes),
            "last_acknowledged": last, "final": dict(final), "vanished": vanished}


def register(history: History, key: str | None = None, *, by_key: bool = False) -> dict[str, Any]:
    """Session guarantees of a register, per process (one client session, possibly switching nodes):

    - *monotonic reads*: an ok read never returns an older version than an earlier ok read of the
      same session;
    - *read your writes*: an ok read never returns a version older than the session's own last
      acknowledged write.
    Operations are taken in the order the session issued them (it issues one at a time). With
    *by_key*, every key is a register of its own (a session's guarantees hold per key), in one pass."""
    sessions: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in history.operations():
        if row["f"] in ("read", "write") and (key is None or row["key"] == key) and row["type"] == "ok":
            sessions.setdefault((row["process"], row["key"] if by_key else None), []).append(row)
    monotonic: list[dict[str, Any]] = []
    ryw: list[dict[str, Any]] = []
    reads = 0
    for (process, _), rows in sessions.items():
        seen_read: tuple[int, int, str] = (-1, -1, "")
        seen_read_row: dict[str, Any] | None = None
        written: tuple[int, int, str] = (-1, -1, "")
        for row in sorted(rows, key=lambda r: r["invoke_time"]):
            v = _version(row["version"])
            if row["f"] == "write":
                written = max(written, v)
                continue
            reads += 1
            if v < seen_read and seen_read_row is not None:
                monotonic.append({"process": process, "key": row["key"], "node": row["node"],
                                  "at": row["invoke_time"],
                                  "read": row["result"], "version": row["version"],
                                  "earlier": seen_read_row["result"],
                                  "earlier_version": seen_read_row["version"],
                                  "earlier_node": seen_read_row["node"]})
            if v < written:
                ryw.append({"process": process, "key": row["key"], "node": row["node"],
                            "at": row["invoke_time"], "read": row["result"], "version": row["version"]})
            if v > seen_read:
                seen_read, seen_read_row = v, row
    return {"valid": not monotonic and not ryw, "reads": reads, "monotonic_read_violations": monotonic,
            "read_your_writes_violations": ryw}


def exactly_one_response(history: History, traces: Iterable[Sequence[Any]] = ()) -> dict[str, Any]:
    """Every request of the history ended with exactly one answer of its own (``ok`` or ``fail``), none
    is left unknown (``info``: timed out or lost) or pending, and the clients' *traces* hold no answer
    nobody asked for and no notification under a subscription id the client does not hold."""
    counts = Counter(row["type"] for row in history.operations() if row["process"] != "nemesis")
    unsolicited = unknown_sub = 0
    for trace in traces:
        for frame in trace:
            unsolicited += frame.kind == "unsolicited-response"
            unknown_sub += frame.kind == "notification-unknown-sub"
    unanswered = counts["info"] + counts["pending"]
    return {"valid": unanswered == 0 and unsolicited == 0 and unknown_sub == 0,
            "requests": sum(counts.values()), "answered": counts["ok"] + counts["fail"],
            "errors": counts["fail"],
            "unanswered": unanswered, "unsolicited": unsolicited, "unknown_subscription": unknown_sub}


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def latency(history: History, split: float, *, f: str | None = None,
            quantiles: Sequence[float] = (0.5, 0.9, 0.99),
            exclude: tuple[float, float] | None = None) -> dict[str, Any]:
    """Latency quantiles (seconds) of the ok operations invoked before and after history time *split*,
    and their same-run ratios (after / before). ``valid`` when both sides have operations. Operations
    invoked within *exclude* (start, end), e.g. the fault itself, count on neither side."""
    sides: dict[str, list[float]] = {"before": [], "after": []}
    for row in history.operations(f=f):
        if exclude is not None and exclude[0] <= row["invoke_time"] < exclude[1]:
            continue
        if row["type"] == "ok" and row["process"] != "nemesis":
            side = "before" if row["invoke_time"] < split else "after"
            sides[side].append(row["complete_time"] - row["invoke_time"])
    out: dict[str, Any] = {"valid": bool(sides["before"]) and bool(sides["after"]),
                           "count_before": len(sides["before"]), "count_after": len(sides["after"])}
    for q in quantiles:
        b, a = _quantile(sides["before"], q), _quantile(sides["after"], q)
        name = f"p{round(q * 100):d}"
        out[f"{name}_before"], out[f"{name}_after"] = b, a
        out[f"{name}_ratio"] = a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan
    return out


__all__ = ["convergence", "exactly_one_response", "last_write", "latency", "register", "set_full"]
