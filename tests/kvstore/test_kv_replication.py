"""Replication details beyond the seed tests: outcome-unknown deadlines, anti-entropy by digest, clean
SIGTERM, durable per-peer cursors."""

from __future__ import annotations

import lmdb
import pytest
from kvstore.client import KeyNotFound, OutcomeUnknown
from workbook.kvcluster import kv_outcome
from workbook.waiting import wait_until


async def test_a_deadline_after_the_local_commit_is_outcome_unknown(start_cluster) -> None:
    cluster = await start_cluster()
    for dst in ("kv2", "kv3"):
        cluster.link("kv1", dst).blackhole()  # peers still count as reachable for a moment; acks never come
    kv1 = cluster.client("kv1", timeout=1.0)
    with pytest.raises(OutcomeUnknown) as err:
        kv1.put("k", "maybe")
    assert err.value.code == "DEADLINE_EXCEEDED"
    assert "outcome unknown: committed on kv1" in err.value.details
    assert kv_outcome("write")(err.value)[0] == "info"  # a history records it as unknown, not failed
    assert kv1.get("k").text == "maybe"  # it was committed locally...
    cluster.heal()
    await cluster.wait_converged(15)
    assert cluster.client("kv3").get("k").text == "maybe"  # ...and replicated once the links work


async def test_anti_entropy_repairs_a_row_the_logs_agree_on(start_cluster) -> None:
    """A node whose log is complete but whose data lost a row (bit rot, a bad restore): the digests
    differ while the watermarks agree, and the node takes the row back from a peer."""
    cluster = await start_cluster()
    kv1 = cluster.client("kv1")
    for i in range(10):
        kv1.put(f"k{i}", f"v{i}")
    await cluster.wait_converged(10)
    assert cluster.stop("kv3") == 0  # SIGTERM: a clean exit
    env = lmdb.open(str(cluster.data_dir("kv3")), max_dbs=4, map_size=256 << 20)
    with env.begin(write=True) as txn:
        assert txn.delete(b"k3", db=env.open_db(b"data", txn=txn))
    env.close()
    await cluster.restart("kv3")
    seconds = await cluster.wait_converged(15)
    assert cluster.client("kv3").get("k3").text == "v3"
    events = [r for r in cluster["kv3"].logs() if r["event"] == "anti_entropy.mismatch"]
    assert events and events[0]["repaired"] >= 1
    print(f"anti-entropy repaired {events[0]['repaired']} row(s); converged after {seconds:.2f} s")


async def test_peer_cursors_are_durable(start_cluster) -> None:
    """What each peer acknowledged durably is itself stored, so shipping resumes from there after a
    restart instead of from the beginning or from nothing."""
    cluster = await start_cluster()
    kv1 = cluster.client("kv1")
    kv1.put("a", "1")
    kv1.put("b", "2")
    await cluster.wait_converged(10)

    def acked() -> dict[str, int | None]:
        return {p["name"]: p["acked"].get("kv1") for p in kv1.status()["peers"]}

    # the next heartbeat reply carries the peers' positions
    await wait_until(lambda: acked() == {"kv2": 2, "kv3": 2}, 10, lambda: f"acked positions {acked()}")
    live = acked()
    assert cluster.stop("kv1") == 0
    env = lmdb.open(str(cluster.data_dir("kv1")), max_dbs=4, map_size=256 << 20, readonly=True)
    with env.begin() as txn:
        meta = env.open_db(b"meta", txn=txn, create=False)
        stored = {peer: int.from_bytes(txn.get(f"cursor:{peer}\0kv1".encode(), db=meta), "big")
                  for peer in ("kv2", "kv3")}
    env.close()
    assert stored == {"kv2": 2, "kv3": 2}
    await cluster.restart("kv1")
    assert {p["name"]: p["acked"].get("kv1") for p in kv1.status()["peers"]} == live


async def test_replicated_versions_too_far_ahead_are_refused_until_the_clock_is_fixed(start_cluster) -> None:
    cluster = await start_cluster()
    await cluster.set_clock_offset("kv3", -60.0)  # kv3's clock is a minute behind: everyone else is "ahead"
    kv1 = cluster.client("kv1")
    kv1.put("k", "v")  # W=2: kv1 + kv2
    def refused() -> bool:
        return any(r["event"] == "peer.error" and "ahead of this node's clock" in r.get("error", "")
                   for r in cluster["kv1"].logs())

    await wait_until(refused, 10, "kv3 to refuse kv1's entries")
    with pytest.raises(KeyNotFound):
        cluster.client("kv3").get("k")
    await cluster.set_clock_offset("kv3", 0.0)
    await cluster.wait_converged(15)
    assert cluster.client("kv3").get("k").text == "v"
