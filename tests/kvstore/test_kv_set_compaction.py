"""A Jepsen-style set test with values of random size up to --max-value-bytes while compaction runs
(log trims, tombstone removal, snapshot refills): a seeded nemesis kills, stops, pauses and partitions
nodes; no acknowledged write may be lost, none may be corrupted, and all nodes must converge.

The default run is short; the issue's 50 fault cycles: ``KV_SET_CYCLES=50 pytest tests/kvstore/
test_kv_set_compaction.py`` (about two minutes on two cores).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest
from kvstore.client import AsyncKVClient, KeyNotFound
from workbook import History, Nemesis, checkers, random_schedule
from workbook.kvcluster import KVCluster, kv_outcome

SEED = int(os.environ.get("KV_SET_SEED", "1717"))
CYCLES = int(os.environ.get("KV_SET_CYCLES", "5"))
LIMIT = 256 << 10
ARGS = ["--max-value-bytes", str(LIMIT), "--compact-interval", "0.3", "--tombstone-grace", "1"]
FAULTS = ["kill", "stop", "pause", "partition"]


def payload(key: str) -> bytes:
    """The value written under *key*: its size (1 byte … LIMIT, log-uniform) and bytes follow from the key."""
    h = hashlib.blake2b(key.encode(), digest_size=8).digest()
    size = max(1, int(2 ** (int.from_bytes(h[:4], "big") / 2**32 * 18)))  # up to 2**18 = LIMIT
    return (key.encode() + b"|") * (size // (len(key) + 1)) + key.encode()[: size % (len(key) + 1)]


async def writers(cluster: KVCluster, history: History, stop: asyncio.Event) -> None:
    """Unique keys with random-size values through every node; some are deleted again (tombstones)."""
    clients = {n: AsyncKVClient(cluster.address(n), timeout=2.0) for n in cluster.names}

    async def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            node = cluster.names[(w + i) % len(cluster.names)]
            key = f"s-{w}-{i}"
            i += 1
            c = clients[node]
            done = await history.record(f"w{w}", "write", lambda c=c, k=key: c.put(k, payload(k)),
                                        node=node, key=key, value=key, outcome=kv_outcome("write"))
            if done.type != "ok":
                await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(worker(w) for w in range(4)))
    finally:
        for c in clients.values():
            await c.close()


async def deleter(cluster: KVCluster, stop: asyncio.Event, deleted: set[str]) -> None:
    """Writes and deletes its own keys (outside the set under test) so tombstones pile up and go."""
    async with AsyncKVClient(cluster.address("kv1"), timeout=2.0) as c:
        i = 0
        while not stop.is_set():
            key = f"d-{i}"
            i += 1
            try:
                await c.put(key, b"x")
                await c.delete(key)
                deleted.add(key)
            except Exception:
                await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_set_with_random_sizes_and_compaction_loses_nothing(start_cluster) -> None:
    cluster = await start_cluster(extra_args=ARGS)
    schedule = random_schedule(SEED, FAULTS, cluster.names, count=CYCLES, hold=(0.3, 1.0), quiet=(0.2, 0.5))
    history, stop, deleted = History(), asyncio.Event(), set()
    t0 = time.monotonic()

    async def faults() -> None:
        try:
            await Nemesis(history, kv=cluster).replay(schedule)
        finally:
            stop.set()

    await asyncio.gather(writers(cluster, history, stop), deleter(cluster, stop, deleted), faults())
    converge_s = await cluster.wait_converged(60)
    keys = {r["key"] for r in history.operations(f="write")}
    verdicts, corrupt = {}, {}
    for name in cluster.names:
        present = set()
        bad = []
        async with AsyncKVClient(cluster.address(name), timeout=10.0) as c:
            for k in keys:
                try:
                    value = (await c.get(k)).value
                except KeyNotFound:
                    continue
                present.add(k)
                if value != payload(k):
                    bad.append(k)
            for k in list(deleted)[:50]:
                with pytest.raises(KeyNotFound):
                    await c.get(k)
        verdicts[name] = checkers.set_full(history, present)
        corrupt[name] = bad
    rows = await cluster.status()
    compacted = {r["name"]: (r.get("log_trimmed_entries"), r.get("tombstones_purged"),
                             r.get("snapshot_refills")) for r in rows}
    v = verdicts["kv1"]
    print(f"\nseed {SEED}, {CYCLES} cycles in {time.monotonic() - t0:.1f} s: {history.counts(f='write')}; "
          f"acknowledged {v['acknowledged']}, lost {[verdicts[n]['lost_count'] for n in cluster.names]}, "
          f"unknown {v['unknown']}, corrupt {[len(corrupt[n]) for n in cluster.names]}; "
          f"(log entries trimmed, tombstones purged, refills) per node {compacted}; "
          f"converged {converge_s:.2f} s after the last heal")
    assert v["acknowledged"] > 20
    for name, verdict in verdicts.items():
        assert verdict["lost"] == [], f"{name} lost acknowledged writes: {verdict['lost'][:10]}"
        assert verdict["unexpected"] == [], f"{name} holds writes that failed: {verdict['unexpected'][:10]}"
        assert corrupt[name] == [], f"{name} holds wrong values for {corrupt[name][:10]}"
    assert checkers.convergence(rows)["valid"]
    assert all(c[0] and c[0] > 0 for c in compacted.values()), compacted  # compaction really ran
