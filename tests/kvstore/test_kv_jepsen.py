"""A Jepsen-style set workload: unique-key writers on every node while a seeded random nemesis kills,
stops, pauses and partitions nodes over many cycles. Every operation is recorded as ok / fail / info;
afterwards no acknowledged write may be missing on any node, and all nodes must converge."""

from __future__ import annotations

import asyncio
import os
import random
import time

from workbook.checkers import convergence_check, set_check
from workbook.history import History
from workbook.kvcluster import KVCluster, read_all, write_unique

SEED = int(os.environ.get("KV_JEPSEN_SEED", "1121"))
CYCLES = int(os.environ.get("KV_JEPSEN_CYCLES", "10"))
FAULTS = ["kill", "stop", "pause", "partition"]


async def nemesis(cluster: KVCluster, rng: random.Random, cycles: int, schedule: list[dict]) -> None:
    """One fault per cycle: apply, hold, undo, quiet. The schedule is a pure function of the seed."""
    order: list[str] = []
    for cycle in range(cycles):
        if not order:  # every fault kind once per round, in a seeded order
            order = rng.sample(FAULTS, len(FAULTS))
        fault = order.pop()
        victim = rng.choice(cluster.names)
        hold, quiet = rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.5)
        schedule.append({"cycle": cycle, "fault": fault, "node": victim, "hold_s": round(hold, 3)})
        if fault == "kill":
            await asyncio.to_thread(cluster.kill, victim)
        elif fault == "stop":
            await asyncio.to_thread(cluster.stop, victim)
        elif fault == "pause":
            cluster.pause(victim)
        else:
            cluster.partition({victim}, set(cluster.names) - {victim})
        await asyncio.sleep(hold)  # the fault's duration (a schedule, not a synchronisation)
        if fault in ("kill", "stop"):
            await cluster.restart(victim)
        elif fault == "pause":
            cluster.resume(victim)
        else:
            cluster.heal()
        await asyncio.sleep(quiet)


async def test_set_workload_loses_no_acknowledged_write_under_random_faults(start_cluster) -> None:
    cluster = await start_cluster()
    rng = random.Random(SEED)
    history, stop, schedule = History(), asyncio.Event(), []
    t0 = time.monotonic()

    async def faults() -> None:
        try:
            await nemesis(cluster, rng, CYCLES, schedule)
        finally:
            stop.set()

    await asyncio.gather(
        write_unique(cluster, history, nodes=cluster.names, prefix="s", concurrency=6, stop=stop,
                     call_timeout=1.5),
        faults())
    cluster.heal()
    converge_s = await cluster.wait_converged(30)
    keys = {r["key"] for r in history.operations()}
    verdicts = {}
    for name in cluster.names:
        present = await read_all(cluster, name, keys)
        verdicts[name] = set_check(history, {k for k, v in present.items() if v is not None})
    convergence = convergence_check(cluster.status())
    v = verdicts["kv1"]
    print(f"\nseed {SEED}, {CYCLES} cycles in {time.monotonic() - t0:.1f} s: {history.counts()}; "
          f"acknowledged {v['acknowledged']}, lost {[verdicts[n]['lost_count'] for n in cluster.names]}, "
          f"unknown {v['unknown']} (of which present {v['recovered_count']}), failed {v['failed']}, "
          f"unexpected {len(v['unexpected'])}; converged {converge_s:.2f} s after the last heal")
    print("schedule:", schedule)
    assert v["acknowledged"] > 100
    for name, verdict in verdicts.items():
        assert verdict["lost"] == [], f"{name} lost acknowledged writes: {verdict['lost'][:10]}"
        assert verdict["unexpected"] == [], f"{name} holds writes that failed: {verdict['unexpected'][:10]}"
    assert convergence["converged"], convergence
    assert {r["fault"] for r in schedule} >= {"kill", "pause", "partition"}
