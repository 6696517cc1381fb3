"""Each defect switch reproduces its incident's symptom, and the same steps pass without it.

kv-01's sequence is not here: its notebook is its regression test (tests/test_notebooks.py), and the
library step it uses is tested in test_kv_workloads.py.

Every test runs twice: ``incident`` (the switch on: the symptom must appear) and ``fixed`` (the switch
off: the invariant must hold). The timing is created, never hoped for: a kill right after an
acknowledgement, a held store, delayed links, a clock offset, a paused process.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from kvstore.client import KeyNotFound, KVClient, Unavailable
from kvstore.proto import kvstore_pb2 as pb
from kvstore.proto import kvstore_pb2_grpc as pbg
from workbook._exceptions import ServiceError
from workbook.checkers import last_write
from workbook.history import History
from workbook.kvcluster import kv_health
from workbook.workloads import read_all, write_register

MODES = ["incident", "fixed"]


def on(mode: str, defect: str) -> list[str]:
    return [defect] if mode == "incident" else []


def serving(address: str) -> bool:
    with KVClient(address) as c:
        return c.health() == "SERVING"


async def until(predicate, within: float, poll: float = 0.02) -> bool:
    """Poll *predicate* until true or *within* seconds passed; returns whether it became true."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(poll)
    return False


@pytest.mark.parametrize("mode", MODES)
async def test_kv02_ready_before_recovery_reads_an_unopened_store(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "ready-before-recovery"))
    c = cluster.client("kv1")
    data = {f"k{i}": f"v{i}" for i in range(20)}
    for k, v in data.items():
        c.put(k, v)
    cluster.stop("kv1")
    svc = cluster["kv1"]
    wrong_after_ready: dict[str, str | None] = {}
    seen = len(svc.logs())  # the log file is appended across restarts: look at new lines only

    def logged(event: str) -> bool:
        return any(r["event"] == event for r in svc.logs()[seen:])

    with cluster.hold_store_writer("kv1"):  # the store's recovery cannot finish until we let go
        await cluster.restart("kv1", wait=False)
        assert await until(lambda: logged("store.opening"), 15)
        ready_while_held = await until(lambda: serving(cluster.address("kv1")), 1.0)
        if ready_while_held:
            got = await read_all(cluster, "kv1", data)
            wrong_after_ready = {k: v for k, v in got.items() if v != data[k]}
        else:
            with pytest.raises(Unavailable, match="not serving yet"):
                c.get("k0")
    await svc.await_ready()
    assert await until(lambda: logged("serving"), 15)  # recovered for real
    got = await read_all(cluster, "kv1", data)
    print(f"[{mode}] SERVING before recovery: {ready_while_held}; wrong reads right after ready: "
          f"{len(wrong_after_ready)} of {len(data)} (e.g. {list(wrong_after_ready.items())[:2]})")
    assert got == data  # once recovered, the data is intact in both modes
    if mode == "incident":
        assert ready_while_held and wrong_after_ready
        assert set(wrong_after_ready.values()) == {None}  # NOT_FOUND from the unopened store
    else:
        assert not ready_while_held and not wrong_after_ready


@pytest.mark.parametrize("mode", MODES)
async def test_kv03_async_replication_acked_write_missing_on_survivors(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "async-replication"))
    for dst in ("kv2", "kv3"):  # kv1's replication traffic is slow, so the timing is ours
        cluster.link("kv1", dst).delay(0.25)
    t0 = time.monotonic()
    w = cluster.client("kv1").put("k", "acked")
    ack_s = time.monotonic() - t0
    cluster.kill("kv1")  # right after the acknowledgement
    await cluster.wait_converged(15, nodes=["kv2", "kv3"])
    survivors = {}
    for name in ("kv2", "kv3"):
        try:
            survivors[name] = cluster.client(name).get("k").text
        except KeyNotFound:
            survivors[name] = None
    for dst in ("kv2", "kv3"):
        cluster.link("kv1", dst).heal()
    await cluster.restart("kv1")
    on_restarted = cluster.client("kv1").get("k").text
    print(f"[{mode}] ack after {ack_s:.3f} s with {w.replicas} replica(s); survivors read {survivors}; "
          f"restarted kv1 reads {on_restarted!r}")
    assert on_restarted == "acked"
    if mode == "incident":
        assert w.replicas == 1 and survivors == {"kv2": None, "kv3": None}
    else:
        assert w.replicas >= 2 and survivors == {"kv2": "acked", "kv3": "acked"}


@pytest.mark.parametrize("mode", MODES)
async def test_kv04_no_catch_up_leaves_the_cut_off_node_stale(start_cluster, mode: str) -> None:
    cluster = await start_cluster(defects=on(mode, "no-catch-up"))
    cluster.cut("kv3")
    await cluster.wait_peers("kv1", 1)
    kv1 = cluster.client("kv1")
    keys = [f"p{i}" for i in range(20)]
    for k in keys:
        kv1.put(k, "during")
    assert cluster["kv3"].alive
    cluster.heal()
    await cluster.wait_peers("kv3", 2)
    try:
        seconds = await cluster.wait_converged(4.0)
    except TimeoutError:
        seconds = None
    on_kv3 = await read_all(cluster, "kv3", keys)
    digests = {r["name"]: r["digest"] for r in await cluster.status()}
    stale = sum(1 for v in on_kv3.values() if v != "during")
    print(f"[{mode}] converged after heal: {seconds if seconds is None else round(seconds, 3)} s; "
          f"stale keys on kv3: {stale}/{len(keys)}; digests {digests}")
    if mode == "incident":
        assert seconds is None and stale == len(keys) and len(set(digests.values())) == 2
    else:
        assert seconds is not None and stale == 0 and len(set(digests.values())) == 1


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
    keys = [f"k{i}" for i in range(20)]
    kv1 = cluster.client("kv1")
    for k in keys:
        kv1.put(k, "old")
    await cluster.wait_converged(10)
    cluster.kill("kv3")
    versions_kv1 = {k: kv1.put(k, "new").version for k in keys}
    for link in cluster.run.links.of("kv3"):  # kv3's links are slow: catching up takes a while
        link.delay(0.2)
    await cluster.restart("kv3")
    kv3 = KVClient(cluster.address("kv3"), carry_version=False)
    stale, backwards = 0, 0
    try:
        for k in keys:  # read at once after SERVING
            r = kv3.get(k)
            stale += r.text != "new"
            backwards += r.version < versions_kv1[k]
    finally:
        kv3.close()
    print(f"[{mode}] stale reads right after ready: {stale}/{len(keys)}; versions older than already "
          f"read from kv1 (time going backwards): {backwards}")
    cluster.heal()
    for link in cluster.run.links.of("kv3"):
        link.delay(0.0)
    await cluster.wait_converged(15)
    if mode == "incident":
        assert stale > 0 and backwards > 0
    else:
        assert stale == 0 and backwards == 0


def _pids_answering(address: str, connections: int = 16) -> list[int]:
    """Admin.Status over fresh connections (each its own TCP connection): who answers."""
    pids = []
    for i in range(connections):
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1),
                                                     ("workbook.conn", i)]) as ch:
            pids.append(pbg.AdminStub(ch).Status(pb.StatusRequest(), timeout=5).pid)
    return pids


@pytest.mark.parametrize("mode", MODES)
async def test_kv07_shared_port_lets_a_zombie_twin_serve(start_cluster, mode: str) -> None:
    cluster = await start_cluster(1, defects=on(mode, "shared-port"))
    first = cluster["kv1"]
    address = cluster.address("kv1")
    cluster.client("kv1").put("k", "v")
    cluster.pause("kv1")  # hung, sockets open: the impatient operator starts another one
    twin_argv = cluster.argv("kv1", listen=address)
    twin = None
    error = ""
    t0 = time.monotonic()
    try:
        twin = await cluster.run.astart("kv1-twin", twin_argv, health=kv_health(), ready_timeout=20)
    except ServiceError as exc:
        error = str(exc)
    failed_after = time.monotonic() - t0
    cluster.resume("kv1")
    pids = await asyncio.to_thread(_pids_answering, address)
    print(f"[{mode}] twin started: {twin is not None}; processes answering on {address}: "
          f"{ {p: pids.count(p) for p in set(pids)} }; error: {error[:160]!r}")
    if mode == "incident":
        assert twin is not None and twin.alive
        assert set(pids) == {first.pid, twin.pid}
    else:
        assert twin is None and failed_after < 10
        assert f"locked by pid {first.pid} (kv1)" in error
        assert set(pids) == {first.pid}
