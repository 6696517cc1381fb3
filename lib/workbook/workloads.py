"""Workloads: the clients' side of a scenario, each one call that records into a :class:`History`.

KV: :func:`write_unique` (a set: unique keys), :func:`write_register` (one key, one logical writer,
a concurrent reader), :func:`read_all`, :func:`present_anywhere`, and :func:`crash_cycle` (kv-01's
write / ``kill -9`` / restart / read-back, shared by the notebook and the tests). RPC:
:func:`request_stream` (requests at a steady rate). Each operation goes through the client's own
outcome rule (:func:`~workbook.kvcluster.kv_outcome`, :func:`~workbook.rpcclient.rpc_outcome`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kvstore.client import AsyncKVClient, KeyNotFound

from workbook import checkers
from workbook.history import History, Op
from workbook.kvcluster import KVCluster, kv_outcome, kv_result
from workbook.nemesis import Nemesis

# -- KV ----------------------------------------------------------------------------------------------------


async def write_unique(cluster: KVCluster, history: History, *, nodes: Sequence[str], prefix: str = "k",
                       count: int | None = None, concurrency: int = 4, stop: asyncio.Event | None = None,
                       on_ok: Callable[[Op], None] | None = None, call_timeout: float = 2.0,
                       retry_pause: float = 0.01) -> None:
    """Write unique keys (``prefix-worker-i``) as fast as the cluster acknowledges them, round-robin over
    *nodes*; ends after *count* writes or when *stop* is set. ``on_ok(op)`` runs right after each
    acknowledgement, before that worker's next request (to time a fault to a known step)."""
    issued = 0
    clients = {n: AsyncKVClient(cluster.address(n), timeout=call_timeout) for n in nodes}

    async def worker(w: int) -> None:
        nonlocal issued
        i = 0
        while (stop is None or not stop.is_set()) and (count is None or issued < count):
            issued += 1
            node = nodes[(w + i) % len(nodes)]
            key = f"{prefix}-{w}-{i}"
            i += 1
            done = await history.record(f"w{w}", "write", lambda c=clients[node], k=key: c.put(k, k),
                                        node=node, key=key, value=key, outcome=kv_outcome("write"),
                                        result=kv_result)
            if done.type == "ok" and on_ok is not None:
                on_ok(done)
            elif done.type != "ok":
                await asyncio.sleep(retry_pause)  # pace retries against a node that is down (not a sync)

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        for c in clients.values():
            await c.close()


async def write_register(cluster: KVCluster, history: History, *, key: str, writes: int,
                         through: Sequence[str], reader: str, converge_timeout: float = 10.0
                         ) -> dict[str, str | None]:
    """One logical writer puts ``v0`` … ``v{writes-1}`` into *key* through the nodes *through* in turn,
    carrying the highest version it has seen from node to node, while a reader reads *key* from
    *reader*; every operation goes into *history*. Returns each node's final value once the cluster
    has converged (the input of :func:`workbook.checkers.last_write`)."""
    writers = {n: cluster.aclient(n) for n in dict.fromkeys(through)}
    reading = cluster.aclient(reader)
    done = asyncio.Event()

    async def write() -> None:
        seen = None
        for i in range(writes):
            node = through[i % len(through)]
            client = writers[node]
            if seen is not None:
                client.seen = max(client.seen, seen)  # one logical client, carrying its versions
            await history.record("writer", "write", lambda c=client, i=i: c.put(key, f"v{i}"), node=node,
                                 key=key, value=f"v{i}", outcome=kv_outcome("write"), result=kv_result)
            seen = client.seen
        done.set()

    async def read() -> None:
        while not done.is_set():
            await history.record("reader", "read", lambda: reading.get(key), node=reader, key=key,
                                 outcome=kv_outcome("read"), result=kv_result)

    await asyncio.gather(write(), read())
    await cluster.wait_converged(converge_timeout)
    return {n: (await read_all(cluster, n, [key]))[key] for n in cluster.names}


async def read_all(cluster: KVCluster, node: str, keys: Iterable[str], *, concurrency: int = 16,
                   call_timeout: float = 5.0) -> dict[str, str | None]:
    """Read every key from *node*: key → value (None when not found)."""
    out: dict[str, str | None] = {}
    todo = list(keys)
    async with AsyncKVClient(cluster.address(node), timeout=call_timeout) as c:
        async def reader(part: list[str]) -> None:
            for k in part:
                try:
                    out[k] = (await c.get(k)).text
                except KeyNotFound:
                    out[k] = None
        await asyncio.gather(*(reader(todo[i::concurrency]) for i in range(concurrency)))
    return out


async def present_anywhere(cluster: KVCluster, keys: Iterable[str]) -> set[str]:
    """The keys that at least one node holds (a write is lost only if no node has it)."""
    keys = list(keys)
    present: set[str] = set()
    for node in cluster.names:
        present |= {k for k, v in (await read_all(cluster, node, keys)).items() if v is not None}
    return present


async def crash_cycle(cluster: KVCluster, *, node: str, acks_before_kill: int, writers: int,
                      prefix: str, history: History | None = None, nemesis: Any = None,
                      converge_timeout: float = 30.0) -> dict[str, Any]:
    """kv-01's step: unique-key writers on *node*; right after the *acks_before_kill*-th acknowledgement
    *node* gets ``kill -9`` (before any other request is sent); it restarts on the same data directory,
    the cluster converges, and every attempted key is read back from every node.

    The kill and the restart go into *history* as nemesis operations. Returns the history, the set
    check (:func:`workbook.checkers.set_full`), the kill's history time, and how long before the kill
    each lost write was acknowledged (ms)."""
    history = history if history is not None else History()
    nemesis = nemesis if nemesis is not None else Nemesis(history, kv=cluster)
    stop = asyncio.Event()
    kill: dict[str, float] = {}
    acks = 0

    def kill_after_acks(_: Op) -> None:
        nonlocal acks
        acks += 1
        if acks >= acks_before_kill and not stop.is_set():
            stop.set()
            kill["wall"] = time.time()
            kill["t"] = nemesis.kill(node)

    await write_unique(cluster, history, nodes=[node], prefix=prefix, concurrency=writers, stop=stop,
                       on_ok=kill_after_acks)
    await nemesis.restart(node)
    await cluster.wait_converged(converge_timeout)
    keys = {row["key"] for row in history.operations(f="write") if row["key"].startswith(f"{prefix}-")}
    check = checkers.set_full(history, await present_anywhere(cluster, keys), prefix=f"{prefix}-")
    return {"history": history, "check": check, "kill_t": kill["t"],
            "lost_ms_before_kill": [round((kill["wall"] - t) * 1000, 1) for t in check["lost_ack_walls"]]}


# -- RPC ---------------------------------------------------------------------------------------------------


async def request_stream(client: Any, method: str = "eth_blockNumber", params: Sequence[Any] | None = None, *,
                         rate: float, duration: float | None = None, count: int | None = None,
                         stop: asyncio.Event | None = None, timeout: float = 2.0,  # noqa: ASYNC109
                         concurrent: bool = False) -> int:
    """Send *method* at *rate* requests per second through *client* (a ``WsClient`` or ``HttpClient``
    that records into its history) for *duration* seconds, *count* requests, or until *stop*.

    Sends are paced on a fixed grid (a slow answer does not shift later sends). With *concurrent*, each
    request runs as its own task (for clients that match answers by id); otherwise one at a time, as a
    strict client must. Errors are recorded in the history, not raised. Returns how many were sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    tasks: set[asyncio.Task[Any]] = set()

    async def one() -> None:
        try:
            await client.request(method, list(params or []), timeout=timeout)
        except Exception:
            pass

    while (count is None or sent < count) and (duration is None or loop.time() - start < duration):
        if stop is not None and stop.is_set():
            break
        if count is None and duration is None and stop is None:
            raise ValueError("request_stream needs a duration, a count or a stop event")
        if concurrent:
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            await one()
        sent += 1
        delay = start + sent / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # the load's pacing, not a synchronisation
    if tasks:
        await asyncio.gather(*tasks)
    return sent


__all__ = ["crash_cycle", "present_anywhere", "read_all", "request_stream", "write_register", "write_unique"]
