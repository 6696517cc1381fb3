"""Compaction: the log is trimmed once every peer holds its entries durably, tombstones every peer holds
go after a grace period, and a node whose needed log is gone is refilled from a peer's data."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from kvstore.client import KeyNotFound
from workbook.waiting import wait_until

FAST = ["--compact-interval", "0.2", "--tombstone-grace", "0.5"]


async def _until(cluster, check, timeout: float = 15.0) -> list[dict]:  # noqa: ASYNC109 (a bound)
    """Poll every node's status until check(rows) holds; returns the rows."""
    rows: list[dict] = []

    def holds() -> bool:
        rows[:] = [cluster.client(n).status() for n in cluster.names]
        return check(rows)

    await wait_until(holds, timeout, lambda: str([(r["name"], r["trimmed"], r["tombstones"]) for r in rows]),
                     poll=0.05)
    return rows


async def test_the_log_is_trimmed_and_tombstones_go_after_the_grace(start_cluster) -> None:
    cluster = await start_cluster(extra_args=FAST)
    kv1 = cluster.client("kv1")
    for i in range(50):
        kv1.put(f"k{i}", f"v{i}")
    for i in range(10):
        kv1.delete(f"k{i}")
    await cluster.wait_converged(10)
    rows = await _until(cluster, lambda rows: all(r["trimmed"].get("kv1") == 60 and r["tombstones"] == 0
                                                  for r in rows))
    assert all(r["log_trimmed_entries"] == 60 and r["tombstones_purged"] == 10 for r in rows)
    await cluster.wait_converged(10)
    for name in cluster.names:
        c = cluster.client(name)
        with pytest.raises(KeyNotFound):
            c.get("k3")
        assert c.get("k42").text == "v42"
        assert c.status()["keys"] == 40
    kv1.put("k3", "again")  # a deleted key can be written again after its tombstone is gone
    await cluster.wait_converged(10)
    assert cluster.client("kv3").get("k3").text == "again"


async def test_tombstones_stay_while_a_peer_has_not_got_them(start_cluster) -> None:
    cluster = await start_cluster(extra_args=FAST)
    kv1 = cluster.client("kv1")
    kv1.put("a", "1")
    await cluster.wait_converged(10)
    cluster.cut("kv3")  # kv3 is away: nothing it has not acknowledged may be compacted
    await cluster.wait_peers("kv1", 1)
    kv1.delete("a")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:  # three grace periods, many compaction rounds
        st = kv1.status()
        assert st["tombstones"] == 1 and st["trimmed"].get("kv1", 0) <= 1, st["trimmed"]
        await asyncio.sleep(0.1)
    cluster.heal()
    await cluster.wait_converged(10)
    with pytest.raises(KeyNotFound):
        cluster.client("kv3").get("a")  # the delete reached kv3 (from the log, still there)
    await _until(cluster, lambda rows: all(r["tombstones"] == 0 for r in rows))


async def test_a_wiped_node_is_refilled_from_a_snapshot(start_cluster) -> None:
    cluster = await start_cluster(extra_args=FAST)
    kv1 = cluster.client("kv1")
    for i in range(200):
        kv1.put(f"k{i}", f"v{i}" * 100)
    for i in range(20):
        kv1.delete(f"k{i}")
    await _until(cluster, lambda rows: all(r["trimmed"].get("kv1") == 220 and r["tombstones"] == 0
                                           for r in rows))
    cluster.kill("kv3")
    shutil.rmtree(cluster.data_dir("kv3"))  # a new disk: it needs everything, and no log has it
    before = sum(r["event"] == "serving" for r in cluster["kv3"].logs())
    await cluster.restart("kv3")
    serving = [r for r in cluster["kv3"].logs() if r["event"] == "serving"][before]
    assert serving["keys"] == 180, serving  # SERVING only once it holds everything
    refills = [r for r in cluster["kv3"].logs() if r["event"] == "snapshot.refill"]
    assert refills and refills[0]["origins"] == {"kv1": 220}, refills
    seconds = await cluster.wait_converged(15)
    kv3 = cluster.client("kv3")
    assert kv3.get("k199").text == "v199" * 100
    with pytest.raises(KeyNotFound):
        kv3.get("k5")
    w = kv3.put("new", "after refill")
    assert w.replicas >= 2
    await cluster.wait_converged(10)
    print(f"kv3 refilled from {refills[0]['peer']}: {refills[0]['rows']} rows in {refills[0]['seconds']} s; "
          f"converged {seconds:.2f} s later")


def test_the_store_trims_purges_and_remembers_its_tombstones_across_a_restart() -> None:
    """In-process: the tombstone index is rebuilt by recovery; a trimmed log keeps its heads check happy
    and hides the trimmed range from readers (who then need a snapshot)."""
    import tempfile
    from pathlib import Path

    from kvstore.proto import kvstore_pb2 as pb
    from kvstore.storage import Store

    def opened(path: Path) -> Store:
        s = Store(path, map_size=8 << 20)
        s.open()
        s.recover()
        s.start_writer()
        return s

    with tempfile.TemporaryDirectory(prefix="kvstore-compact-") as d:
        s = opened(Path(d))
        for i, (key, tomb) in enumerate([(b"a", False), (b"b", False), (b"a", True)], start=1):
            v = pb.Version(wall_ms=1000 + i, logical=0, node="n1")
            s.submit(s.local_write("n1", key, b"" if tomb else b"v", tomb, v)).result(5)
        assert s.tombstone_keys == {b"a"}
        assert s.submit(s.trim_log({"n1": 3})).result(5) == 3
        s.close()
        s = opened(Path(d))  # recovery: the log head (3) is trimmed, not missing
        try:
            assert s.tombstone_keys == {b"a"} and s.trimmed == {"n1": 3}
            assert s.read_log({"n1": 1}) == []  # entries 2..3 are gone: this reader needs a snapshot
            keys = s.tombstones_to_purge({"n1": 3}, before_ms=2000)
            assert keys == [b"a"]
            assert s.submit(s.purge_tombstones(keys, {"n1": 3}, 2000)).result(5) == 1
            assert s.tombstone_keys == set() and s.tombstones == 0 and s.keys == 1
            assert s.get(b"a") is None and s.get(b"b").value == b"v"
        finally:
            s.close()
