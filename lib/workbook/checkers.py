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


def error_rate(history: History, *, max_rate: float, excuse: Any = None) -> dict[str, Any]:
    """The clients' error rate: operations that did not end ``ok`` (fail, info or still pending) over all
    client operations; ``valid`` when it is below *max_rate*. ``excuse(row)`` marks errors that are not
    counted (e.g. a node's own error answer that a proxy must relay as is); they are reported apart.
    ``first_error``: history time of the earliest counted error's invoke."""
    rows = [r for r in history.operations() if r["process"] != "nemesis"]
    bad = [r for r in rows if r["type"] != "ok"]
    excused = [r for r in bad if excuse is not None and excuse(r)]
    counted = [r for r in bad if not (excuse is not None and excuse(r))]
    rate = len(counted) / len(rows) if rows else math.nan
    by_type = Counter(r["type"] for r in counted)
    return {"valid": bool(rows) and rate < max_rate, "operations": len(rows), "errors": len(counted),
            "error_rate": rate, "excused": len(excused), "by_type": dict(by_type),
            "first_error": min((r["invoke_time"] for r in counted), default=None)}


def fault_at(faults: Sequence[Mapping[str, Any]], t: float) -> dict[str, Any] | None:
    """The fault to blame for something that began at history time *t*: one in force then (the latest
    started), else the last one that ended before *t*; None before the first fault. *faults*:
    ``History.faults()`` rows."""
    started = [f for f in faults if f["start"] <= t]
    if not started:
        return None
    active = [f for f in started if f["end"] is None or f["end"] >= t]
    pool = active or started
    return dict(max(pool, key=lambda f: f["start"] if active else (f["end"] or f["start"])))


def _is_sub_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("0x") and len(value) == 34


def session_stream(frames: Iterable[Any]) -> dict[str, Any]:
    """Judge one WebSocket session's wire trace (``WsClient.trace``: sent and received frames, in order):

    - every request gets exactly one response, with its id (ids may be reused: responses per id never
      exceed requests per id sent before them, and none is missing at the end);
    - no notification arrives under a subscription id the client does not hold at that moment (held:
      answered by one of its ``eth_subscribe`` and not yet released by an answered ``eth_unsubscribe``).
    ``flagged``: the ``seq`` of each frame that broke a property, for a sequence chart."""
    sent: Counter[str] = Counter()
    got: Counter[str] = Counter()
    asked: dict[str, list[tuple[str, Any]]] = {}  # id -> [(method, params)] still unanswered, in order
    held: set[str] = set()
    problems: list[str] = []
    flagged: list[int] = []
    for frame in frames:
        message = frame.message
        if frame.direction == "sent" and isinstance(message, dict) and "id" in message:
            key = repr(message["id"])
            sent[key] += 1
            asked.setdefault(key, []).append((message.get("method"), message.get("params")))
        elif frame.direction != "received" or not isinstance(message, dict):
            continue
        elif message.get("method") == "eth_subscription":
            sub = (message.get("params") or {}).get("subscription")
            if sub not in held:
                problems.append(f"notification under {sub}, which the client does not hold")
                flagged.append(frame.seq)
        elif "id" in message:
            key = repr(message["id"])
            got[key] += 1
            if got[key] > sent[key]:
                problems.append(f"id {message['id']!r}: response #{got[key]} to {sent[key]} request(s)")
                flagged.append(frame.seq)
                continue
            method, params = asked[key].pop(0) if asked.get(key) else (None, None)
            result = message.get("result")
            if method == "eth_subscribe" and _is_sub_id(result):
                held.add(result)
            elif method == "eth_unsubscribe" and result is True and params:
                held.discard(params[0])
    missing = {k: n - got[k] for k, n in sent.items() if got[k] < n}
    if missing:
        problems.append(f"requests without an answer: {missing}")
    return {"valid": not problems, "problems": problems, "flagged": flagged, "requests": sum(sent.values()),
            "responses": sum(got.values()), "held": sorted(held)}


def percentiles(values: Sequence[float], quantiles: Sequence[float] = (0.5, 0.99)) -> dict[str, float]:
    """``{"p50": ..., "p99": ...}`` of *values* (nearest rank; nan when empty)."""
    return {f"p{round(q * 100):d}": _quantile(values, q) for q in quantiles}


def flat(values: Sequence[float], *, tolerance: float = 0.1) -> dict[str, Any]:
    """A series is flat when the mean of its last quarter is within *tolerance* (relative) of the mean
    of its first quarter (e.g. a process's memory through a load run); needs 4 values or more."""
    quarter = len(values) // 4
    if quarter == 0:
        return {"valid": False, "samples": len(values), "first": math.nan, "last": math.nan,
                "change": math.nan}
    first = sum(values[:quarter]) / quarter
    last = sum(values[-quarter:]) / quarter
    change = (last - first) / first if first else math.inf
    return {"valid": abs(change) <= tolerance, "samples": len(values), "first": first, "last": last,
            "change": change}


__all__ = ["convergence", "error_rate", "exactly_one_response", "fault_at", "flat", "last_write", "latency",
           "percentiles", "register", "session_stream", "set_full"]
