"""Each defect switch reproduces its incident's symptom, and the same steps pass without it.

Every test runs twice: ``incident`` (the switch on: the symptom must appear) and ``fixed`` (the switch
off: the invariant must hold). The timing is created, never hoped for: a kill right after an
acknowledgement, a held store, delayed links, a clock offset, a paused process. Each walks the same
library function as its notebook (``workbook.workloads``), at a smaller size. kv-01's step
(``crash_cycle``) is tested in test_kv_workloads.py; its notebook is its regression test.
"""

from __future__ import annotations

import time

import pytest
from workbook._exceptions import NemesisError
from workbook.checkers import last_write, register
from workbook.history import History
from workbook.nemesis import Nemesis
from workbook.waiting import wait_until
from workbook.workloads import (
    partial_failure,
    partition_round,
    read_all,
    restart_all_round,
    stale_read_round,
    write_keys,
    write_register,
)

MODES = ["incident", "fixed"]


def on(mode: str, defect: str) -> list[str]:
    return [defect] if mode == "incident" else []


@pytest.mark.parametrize("mode", MODES)
async def test_kv02_ready_before_recovery_reads_an_unopened_store(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "ready-before-recovery"))
    history = History()
    nemesis = Nemesis(history, kv=cluster)
    expected = {f"k{i}": f"v{i}" for i in range(20)}
    await write_keys(cluster, history, expected, nodes=cluster.names)
    await cluster.wait_converged(15)
    # every node restarts with its store held (its recovery cannot finish until we let go)
    res = await restart_all_round(cluster, history, nemesis, expected=expected, how="stop", hold_window=1.0,
                                  ready_timeout=15)
    rows = res["rows"]
    held = [r["SERVING while store held"] for r in rows]
    print(f"[{mode}] SERVING before recovery: {held}; NOT_FOUND right after ready: "
          f"{[r.get('while store held: NOT_FOUND') for r in rows]}")

    async def recovered() -> bool:  # the node's own phase, not its health: recovered for real
        return all(r.get("phase") == "serving" for r in await cluster.status())

    await wait_until(recovered, 15, "every node recovered")
    for n in cluster.names:  # once recovered, the data is intact in both modes
        assert await read_all(cluster, n, expected) == expected
    if mode == "incident":
        assert all(held) and [r["while store held: NOT_FOUND"] for r in rows] == [20, 20, 20]
    else:
        assert not any(held)


@pytest.mark.parametrize("mode", MODES)
async def test_kv03_async_replication_acked_write_missing_on_survivors(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "async-replication"))
    history = History()
    res = await partial_failure(cluster, history, Nemesis(history, kv=cluster), node="kv1", writes=20,
                                writers=4, prefix="r1", link_delay=0.25, converge_timeout=15)
    print(f"[{mode}] ack after {res['ack_s']:.3f} s with {res['replicas']} replica(s); while kv1 is down "
          f"{res['holders_down']}; after its restart {res['holders_after']}")
    assert res["holders_after"] == {"kv1": "acked", "kv2": "acked", "kv3": "acked", "expected": "acked"}
    assert not any(res["missing_after"].values())
    survivors = {n: res["holders_down"][n] for n in ("kv2", "kv3")}
    if mode == "incident":
        assert res["replicas"] == 1 and survivors == {"kv2": None, "kv3": None}
    else:
        assert res["replicas"] >= 2 and survivors == {"kv2": "acked", "kv3": "acked"}
        assert not any(res["missing_down"].values())


@pytest.mark.parametrize("mode", MODES)
async def test_kv04_no_catch_up_leaves_the_cut_off_node_stale(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "no-catch-up"))
    history = History()
    res = await partition_round(cluster, history, Nemesis(history, kv=cluster), node="kv3", writes=20,
                                through=("kv1", "kv2"), prefix="p", bound=4.0)
    assert cluster["kv3"].alive
    print(f"[{mode}] converged after heal: {res['seconds']} s; stale keys on kv3: {len(res['stale'])}/20; "
          f"digests {res['digests']}")
    if mode == "incident":
        assert res["seconds"] is None and len(res["stale"]) == 20 and len(set(res["digests"].values())) == 2
    else:
        assert res["seconds"] is not None and not res["stale"] and len(set(res["digests"].values())) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_kv05_wall_clock_lww_loses_the_last_acknowledged_write(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "wall-clock-lww"))
    await cluster.set_clock_offset("kv3", -5.0)
    history = History()
    # alternating kv1/kv3: the last write goes through the slow clock
    final = await write_register(cluster, history, key="reg", writes=20, through=("kv1", "kv3"), reader="kv2")
    assert history.counts()["fail"] == history.counts()["info"] == 0
    verdict = last_write(history, "reg", final)
    print(f"[{mode}] last acknowledged {verdict['last_acknowledged']!r}, final {final}, "
          f"vanished {[v['value'] for v in verdict['vanished'] if v['node'] == 'kv1']}")
    if mode == "incident":
        assert not verdict["valid"] and verdict["vanished"]
    else:
        assert verdict["valid"] and verdict["last_acknowledged"] == "v19"


@pytest.mark.parametrize("mode", MODES)
async def test_kv06_serve_before_catch_up_gives_stale_reads(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "serve-before-catch-up"))
    history = History()
    keys = [f"k{i}" for i in range(20)]
    await write_keys(cluster, history, {k: "old" for k in keys}, nodes=["kv1"])
    await cluster.wait_converged(10)
    res = await stale_read_round(cluster, history, Nemesis(history, kv=cluster), node="kv3", keys=keys,
                                 value="new", via="kv1", catch_up_delay=0.2, converge_timeout=15)
    backwards = len(register(history, by_key=True)["monotonic_read_violations"])
    print(f"[{mode}] stale reads right after ready: {len(res['stale'])}/{len(keys)}; the session read an "
          f"older version from kv3 than from kv1 before (time going backwards): {backwards}")
    if mode == "incident":
        assert res["stale"] and backwards > 0
    else:
        assert not res["stale"] and backwards == 0


@pytest.mark.parametrize("mode", MODES)
async def test_kv07_shared_port_lets_a_zombie_twin_serve(start_cluster, mode: str) -> None:
    cluster = await start_cluster(1, defects=on(mode, "shared-port"))
    history = History()
    nemesis = Nemesis(history, kv=cluster)
    first = cluster["kv1"]
    cluster.client("kv1").put("k", "v")
    nemesis.pause("kv1")  # hung, sockets open: the impatient operator starts another one
    error = ""
    t0 = time.monotonic()
    try:
        await nemesis.twin("kv1")
    except NemesisError as exc:
        error = str(exc)
    failed_after = time.monotonic() - t0
    nemesis.resume("kv1")
    twin = cluster.run.services.get("kv1-twin")
    pids = [r["pid"] for r in await cluster.answered_by("kv1", 16)]
    print(f"[{mode}] twin started: {not error}; processes answering on {cluster.address('kv1')}: "
          f"{ {p: pids.count(p) for p in set(pids)} }; error: {error[-160:]!r}")
    if mode == "incident":
        assert not error and twin is not None and twin.alive
        assert set(pids) == {first.pid, twin.pid}
    else:
        assert error and failed_after < 10
        assert f"locked by pid {first.pid} (kv1)" in error
        assert set(pids) == {first.pid}
