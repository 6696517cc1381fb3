"""The five failure tests of the seed document (seeds/001), as integration tests on real processes."""

from __future__ import annotations

import asyncio

import pytest
from kvstore.client import KeyNotFound, Unavailable
from workbook.checkers import last_write, set_full
from workbook.history import History
from workbook.workloads import read_all, write_register, write_unique


async def test_recovery_from_kill_9(start_cluster) -> None:
    """Unique-key writer on kv1; kill -9 kv1 right after an acknowledgement; restart; nothing lost."""
    cluster = await start_cluster()
    history = History()
    stop = asyncio.Event()

    def kill_after_40(ev) -> None:
        if history.counts()["ok"] >= 40 and not stop.is_set():
            cluster.kill("kv1")  # synchronous: no other request is sent between the ack and the kill
            stop.set()

    await write_unique(cluster, history, nodes=["kv1"], concurrency=4, stop=stop, on_ok=kill_after_40)
    assert not cluster["kv1"].alive
    await cluster.restart("kv1")
    present = await read_all(cluster, "kv1", {r["key"] for r in history.operations()})
    verdict = set_full(history, {k for k, v in present.items() if v is not None})
    print("kill -9 recovery:", {k: verdict[k] for k in ("acknowledged", "unknown", "lost_count")})
    assert verdict["acknowledged"] >= 40
    assert verdict["lost"] == [] and verdict["valid"]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_restart_of_every_node_keeps_the_data(start_cluster, how: str) -> None:
    """Write a data set (puts, overwrites, deletes); stop all three; start all three; read from each as
    soon as it reports SERVING: every read returns the last acknowledged value."""
    cluster = await start_cluster()
    c = cluster.client("kv1")
    expected: dict[str, str | None] = {}
    for i in range(30):
        c.put(f"k{i}", f"v{i}")
        expected[f"k{i}"] = f"v{i}"
    for i in range(0, 30, 3):
        cluster.client("kv2").put(f"k{i}", f"w{i}")
        expected[f"k{i}"] = f"w{i}"
    for i in range(1, 30, 5):
        cluster.client("kv3").delete(f"k{i}")
        expected[f"k{i}"] = None
    for name in cluster.names:
        if how == "SIGTERM":
            assert cluster.stop(name) == 0  # graceful: exit status 0
        else:
            cluster.kill(name)

    async def restart_and_read(name: str) -> dict[str, str | None]:
        await cluster.restart(name)  # returns as soon as the node reports SERVING
        return await read_all(cluster, name, expected)

    results = await asyncio.gather(*(restart_and_read(n) for n in cluster.names))
    for name, got in zip(cluster.names, results, strict=True):
        wrong = {k: (v, expected[k]) for k, v in got.items() if v != expected[k]}
        assert wrong == {}, f"{name} read wrong values right after ready: {wrong}"


async def test_partial_failure_then_catch_up(start_cluster) -> None:
    """kill -9 the node that took the write; the others serve it; the restarted node has it too, and
    catches up with what was written while it was down."""
    cluster = await start_cluster()
    assert cluster.client("kv1").put("k", "v1").replicas >= 2  # durable on a majority when acknowledged
    cluster.kill("kv1")
    # Reads are answered by one node: the survivor that was not in the quorum gets its copy from the
    # other survivor (relay), so let the two agree first.
    await cluster.wait_converged(10, nodes=["kv2", "kv3"])
    for name in ("kv2", "kv3"):
        assert cluster.client(name).get("k").text == "v1"
    cluster.client("kv2").put("while-down", "x")
    await cluster.restart("kv1")
    kv1 = cluster.client("kv1")
    assert kv1.get("k").text == "v1"
    assert kv1.get("while-down").text == "x"  # caught up before it reported SERVING
    await cluster.wait_converged(10)


async def test_network_partition_heals_and_catches_up(start_cluster) -> None:
    """Cut kv3 off through its links (its process keeps running); write on the majority side; the
    minority refuses writes; heal; everyone converges to the new values."""
    cluster = await start_cluster()
    kv1, kv3 = cluster.client("kv1"), cluster.client("kv3")
    kv1.put("k", "before")
    await cluster.wait_converged(10)
    cluster.cut("kv3")
    await cluster.wait_peers("kv3", 0)
    await cluster.wait_peers("kv1", 1)
    for i in range(10):
        kv1.put(f"p{i}", "during")
    kv1.put("k", "after")
    assert cluster["kv3"].alive
    assert kv3.get("k").text == "before"  # cut off: it cannot know yet
    with pytest.raises(Unavailable, match="nothing was written"):
        kv3.put("minority", "x")
    with pytest.raises(KeyNotFound):
        kv3.get("p0")
    cluster.heal()
    seconds = await cluster.wait_converged(15)
    print(f"converged {seconds:.2f} s after the heal")
    assert kv3.get("k").text == "after"
    assert all(v == "during" for v in (await read_all(cluster, "kv3", [f"p{i}" for i in range(10)])).values())


async def test_concurrent_writer_and_reader_final_value_is_last_acknowledged(start_cluster) -> None:
    """One writer updates a key through alternating nodes while a reader reads; afterwards every node
    holds the last acknowledged write."""
    cluster = await start_cluster()
    history = History()
    final = await write_register(cluster, history, key="reg", writes=40, through=("kv1", "kv2"), reader="kv3")
    verdict = last_write(history, "reg", final)
    print("reads during the run:", sum(1 for r in history.operations() if r["f"] == "read"))
    assert verdict["valid"], verdict
    assert verdict["last_acknowledged"] == "v39"
