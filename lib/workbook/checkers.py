"""Verdicts over histories and cluster state: lost acknowledged writes (set), convergence (digests) and
"the final value is the last acknowledged write" (register under concurrent writers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from workbook.history import History


def set_check(history: History, present: Iterable[str]) -> dict[str, Any]:
    """Unique-key writes against the keys found at the end (*present*).

    ``lost``: acknowledged (ok) but absent — must be 0. ``unexpected``: present but never written or
    definitely failed. ``recovered``: outcome unknown (info) and present. ``valid`` iff nothing is lost
    or unexpected.
    """
    found = set(present)
    by_key: dict[str, str] = {}
    ack_time: dict[str, float] = {}
    for row in history.operations():
        if row["f"] != "write":
            continue
        by_key[row["key"]] = row["type"]
        if row["type"] == "ok":
            ack_time[row["key"]] = row["complete_wall"]
    ok = {k for k, t in by_key.items() if t == "ok"}
    info = {k for k, t in by_key.items() if t in ("info", "pending")}
    failed = {k for k, t in by_key.items() if t == "fail"}
    lost = sorted(ok - found)
    unexpected = sorted((found - set(by_key)) | (found & failed))
    recovered = sorted(info & found)
    return {"attempted": len(by_key), "acknowledged": len(ok), "failed": len(failed), "unknown": len(info),
            "lost": lost, "lost_count": len(lost), "lost_ack_walls": [ack_time[k] for k in lost],
            "unexpected": unexpected, "recovered": recovered, "recovered_count": len(recovered),
            "valid": not lost and not unexpected}


def convergence_check(statuses: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """All reachable nodes report the same digest (``statuses``: ``KVCluster.status()`` rows)."""
    rows = list(statuses)
    digests = {r["name"]: r.get("digest") for r in rows}
    distinct = {d for d in digests.values() if d}
    reachable = all(r.get("digest") for r in rows)
    return {"converged": reachable and len(distinct) == 1, "digests": digests, "distinct": len(distinct)}


def last_write_check(history: History, key: str, final: Mapping[str, str | None]) -> dict[str, Any]:
    """Register check for one key written by one sequential writer: every node's final value (*final*:
    node → value) must be the last acknowledged write. ``vanished`` lists acknowledged writes that came
    after the surviving one (they were acknowledged and then lost to an older write)."""
    writes = [r for r in history.operations() if r["f"] == "write" and r["key"] == key and r["type"] == "ok"]
    writes.sort(key=lambda r: r["complete_time"])
    last = writes[-1]["value"] if writes else None
    values = [r["value"] for r in writes]
    vanished: list[dict[str, Any]] = []
    for node, value in final.items():
        if value == last:
            continue
        after = values.index(value) + 1 if value in values else 0
        for r in writes[after:]:
            vanished.append({"node": node, "value": r["value"], "via": r["node"], "version": r["version"],
                             "acked_at": r["complete_time"]})
    return {"acknowledged": len(writes), "last_acknowledged": last, "final": dict(final),
            "vanished": vanished, "valid": all(v == last for v in final.values())}
