"""A Jepsen-style set workload: unique-key writers on every node while a seeded nemesis kills, stops,
pauses and partitions nodes over many cycles. Every operation and every fault is recorded in one
history; afterwards no acknowledged write may be missing on any node, and all nodes must converge.
The schedule is written beside the history, and replaying it applies the same faults in order."""

from __future__ import annotations

import asyncio
import os
import time

from workbook import History, Nemesis, Schedule, checkers, random_schedule
from workbook.workloads import read_all, write_unique

SEED = int(os.environ.get("KV_JEPSEN_SEED", "1121"))
CYCLES = int(os.environ.get("KV_JEPSEN_CYCLES", "10"))
FAULTS = ["kill", "stop", "pause", "partition"]


async def test_set_workload_loses_no_acknowledged_write_under_random_faults(start_cluster, tmp_path) -> None:
    cluster = await start_cluster()
    schedule = random_schedule(SEED, FAULTS, cluster.names, count=CYCLES, hold=(0.3, 1.0), quiet=(0.2, 0.5))
    schedule.save(tmp_path / "schedule.json")
    history, stop = History(), asyncio.Event()
    nemesis = Nemesis(history, kv=cluster)
    t0 = time.monotonic()

    async def faults() -> None:
        try:
            await nemesis.replay(schedule)
        finally:
            stop.set()

    await asyncio.gather(
        write_unique(cluster, history, nodes=cluster.names, prefix="s", concurrency=6, stop=stop,
                     call_timeout=1.5),
        faults())
    converge_s = await cluster.wait_converged(30)
    history.save(tmp_path / "history.jsonl")
    keys = {r["key"] for r in history.operations(f="write")}
    verdicts = {}
    for name in cluster.names:
        present = await read_all(cluster, name, keys)
        verdicts[name] = checkers.set_full(history, {k for k, v in present.items() if v is not None})
    converged = checkers.convergence(await cluster.status())
    v = verdicts["kv1"]
    print(f"\nseed {SEED}, {CYCLES} cycles in {time.monotonic() - t0:.1f} s: {history.counts(f='write')}; "
          f"acknowledged {v['acknowledged']}, lost {[verdicts[n]['lost_count'] for n in cluster.names]}, "
          f"unknown {v['unknown']} (of which present {v['recovered_count']}), failed {v['failed']}, "
          f"unexpected {len(v['unexpected'])}; converged {converge_s:.2f} s after the last heal")
    assert v["acknowledged"] > 100
    for name, verdict in verdicts.items():
        assert verdict["lost"] == [], f"{name} lost acknowledged writes: {verdict['lost'][:10]}"
        assert verdict["unexpected"] == [], f"{name} holds writes that failed: {verdict['unexpected'][:10]}"
    assert converged["valid"], converged
    # every fault of the schedule is in the history, as a nemesis operation with its end, in order
    applied = history.faults()
    assert [(f["kind"], f["node"]) for f in applied] == [(f.kind, f.target) for f in schedule.faults]
    assert all(f["end"] is not None and f["end"] >= f["start"] for f in applied)
    assert Schedule.load(tmp_path / "schedule.json") == schedule


async def test_replaying_a_saved_schedule_applies_the_same_faults_in_the_same_order(start_cluster,
                                                                                     tmp_path) -> None:
    cluster = await start_cluster()
    random_schedule(7, ["pause", "partition", "kill"], cluster.names, count=4, hold=(0.05, 0.1),
                    quiet=(0.05, 0.1)).save(tmp_path / "first.json")
    runs = []
    for _ in range(2):
        history = History()
        applied = await Nemesis(history, kv=cluster).replay(Schedule.load(tmp_path / "first.json"))
        runs.append([(a["kind"], a["target"], a["params"]) for a in applied])
        assert [(f["kind"], f["node"]) for f in history.faults()] == [(k, t) for k, t, _ in runs[-1]]
    planned = Schedule.load(tmp_path / "first.json")
    assert runs[0] == runs[1]
    assert [k for k, _, _ in runs[0]] == [f.kind for f in planned.faults]
    await cluster.wait_converged(20)
