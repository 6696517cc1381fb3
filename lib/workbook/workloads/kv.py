"""KV workloads: writers, readers and the kv notebooks' rounds against a cluster, recorded in a history."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kvstore.client import AsyncKVClient, KeyNotFound

from workbook import checkers
from workbook._exceptions import ConditionTimeout, ServiceError
from workbook.history import History, Op
from workbook.kvcluster import KVCluster, kv_outcome, kv_result
from workbook.nemesis import Nemesis
from workbook.waiting import wait_until


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
                   call_timeout: float = 5.0, history: History | None = None, process: str = "reader",
                   carry_version: bool = True) -> dict[str, str | None]:
    """Read every key from *node*: key → value (None when not found). With *history*, each read is
    recorded (processes ``{process}-0`` … per concurrent reader; one ``process`` when *concurrency* is 1).
    *carry_version* False: a plain client that does not send the highest version it has seen."""
    out: dict[str, str | None] = {}
    todo = list(keys)
    async with AsyncKVClient(cluster.address(node), timeout=call_timeout, carry_version=carry_version) as c:
        async def reader(r: int, part: list[str]) -> None:
            name = process if concurrency == 1 else f"{process}-{r}"
            for k in part:
                if history is None:
                    try:
                        out[k] = (await c.get(k)).text
                    except KeyNotFound:
                        out[k] = None
                    continue
                done = await history.record(name, "read", lambda k=k: c.get(k), node=node, key=k,
                                            outcome=kv_outcome("read"), result=kv_result)
                if done.type != "ok":
                    raise ServiceError(f"read of {k!r} from {node} failed: {done.error}")
                out[k] = done.value
        await asyncio.gather(*(reader(r, todo[r::concurrency]) for r in range(concurrency)))
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


async def write_keys(cluster: KVCluster, history: History, values: dict[str, str], *, nodes: Sequence[str],
                     concurrency: int = 4, process: str = "w", call_timeout: float = 5.0) -> dict[str, str]:
    """Put each key → value of *values* (round-robin over *nodes*, *concurrency* workers named
    ``{process}{i}``), recording every put; returns the versions of those acknowledged (key → version)."""
    todo = list(values)
    versions: dict[str, str] = {}
    clients = {n: AsyncKVClient(cluster.address(n), timeout=call_timeout) for n in nodes}

    async def worker(w: int) -> None:
        for i, k in enumerate(todo[w::concurrency]):
            node = nodes[(w + i) % len(nodes)]
            done = await history.record(f"{process}{w}", "write",
                                        lambda c=clients[node], k=k: c.put(k, values[k]), node=node, key=k,
                                        value=values[k], outcome=kv_outcome("write"), result=kv_result)
            if done.type == "ok":
                versions[k] = done.version

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        for c in clients.values():
            await c.close()
    return versions


async def converges_within(cluster: KVCluster, bound: float,
                           nodes: Iterable[str] | None = None) -> float | None:
    """Seconds until every (given) node holds the same contents, or None when not within *bound*."""
    try:
        return await cluster.wait_converged(bound, nodes=nodes)
    except ConditionTimeout:
        return None


def _holders(reads: dict[str, dict[str, str | None]], key: str, expected: str) -> dict[str, Any]:
    """Who holds *key*: node → value read (None: NOT_FOUND; "(down)": not read, the node was down)."""
    held = {node: ("(down)" if got is None else got.get(key)) for node, got in reads.items()}
    return held | {"expected": expected}


async def partial_failure(cluster: KVCluster, history: History, nemesis: Nemesis, *, node: str, writes: int,
                          writers: int, prefix: str, link_delay: float,
                          converge_timeout: float = 30.0) -> dict[str, Any]:
    """kv-03's round: *writes* unique keys through *node* at full speed; then *node*'s links get
    *link_delay* (its replication traffic is slow, so the window after an acknowledgement is ours), one
    more put ("the write") goes through it, and *node* gets ``kill -9`` right after that acknowledgement.
    Every acknowledged key is read from the survivors while *node* is down, and from every node after
    it restarts (links healed). Returns the acknowledgement, the per-node holders and the missing keys."""
    others = [n for n in cluster.names if n != node]
    await write_unique(cluster, history, nodes=[node], prefix=prefix, count=writes, concurrency=writers)
    nemesis.delay(node, link_delay)
    the_key = f"{prefix}-the-write"
    async with AsyncKVClient(cluster.address(node)) as c:
        t0 = time.monotonic()
        done = await history.record("writer", "write", lambda: c.put(the_key, "acked"), node=node,
                                    key=the_key, value="acked", outcome=kv_outcome("write"),
                                    result=lambda r: (r.replicas, kv_result(r)[1]))
        ack_s = time.monotonic() - t0
        kill_t = nemesis.kill(node)  # right after the acknowledgement, before anything else is sent
    if done.type != "ok":
        raise ServiceError(f"the write through {node} was not acknowledged: {done.error}")
    replicas = done.value
    acked = {r["key"] for r in history.operations(f="write") if r["type"] == "ok"
             and str(r["key"]).startswith(f"{prefix}-")}
    await cluster.wait_converged(converge_timeout, nodes=others)
    down = {n: None for n in cluster.names}
    for n in others:
        down[n] = await read_all(cluster, n, sorted(acked), history=history, process=f"read-{n}",
                                 concurrency=4)
    nemesis.heal()
    await nemesis.restart(node)
    await cluster.wait_converged(converge_timeout)
    after = {n: await read_all(cluster, n, sorted(acked)) for n in cluster.names}
    missing_down = {n: sorted(k for k in acked if down[n][k] is None) for n in others}
    missing_after = {n: sorted(k for k in acked if after[n][k] is None) for n in cluster.names}
    return {"key": the_key, "ack_s": ack_s, "replicas": replicas, "kill_t": kill_t,
            "acknowledged": len(acked), "holders_down": _holders(down, the_key, "acked"),
            "holders_after": _holders(after, the_key, "acked"), "missing_down": missing_down,
            "missing_after": missing_after}


async def partition_round(cluster: KVCluster, history: History, nemesis: Nemesis, *, node: str, writes: int,
                          through: Sequence[str], prefix: str, bound: float,
                          writers: int = 4) -> dict[str, Any]:
    """kv-04's round: cut *node* off (its process keeps running), write *writes* unique keys through
    *through*, heal, and measure the seconds from the heal until every node holds the same contents
    (None if not within *bound*). Then read every key from *node*: the stale ones are listed."""
    nemesis.cut(node)
    for n in through:
        await cluster.wait_peers(n, len(cluster.names) - 2)  # the cut is in force on both sides
    await write_unique(cluster, history, nodes=list(through), prefix=prefix, count=writes,
                       concurrency=writers)
    keys = sorted(r["key"] for r in history.operations(f="write")
                  if r["type"] == "ok" and str(r["key"]).startswith(f"{prefix}-"))
    healed = time.monotonic()
    nemesis.heal()
    await cluster.wait_peers(node, len(cluster.names) - 1)
    seconds = await converges_within(cluster, max(0.0, bound - (time.monotonic() - healed)))
    seconds = None if seconds is None else time.monotonic() - healed
    on_node = await read_all(cluster, node, keys)
    return {"writes": len(keys), "seconds": seconds, "keys": keys,
            "stale": sorted(k for k, v in on_node.items() if v != k),
            "digests": {r["name"]: r["digest"] for r in await cluster.status()}}


async def stale_read_round(cluster: KVCluster, history: History, nemesis: Nemesis, *, node: str,
                           keys: Sequence[str], value: str, via: str, catch_up_delay: float,
                           writers: int = 4, session: str = "session",
                           converge_timeout: float = 30.0) -> dict[str, Any]:
    """kv-06's round: *node* is killed; *keys* get *value* through *via* while it is down; one client
    session reads them back from *via*, then *node* restarts with slow links (*catch_up_delay*: its
    catch-up takes a while) and the same session reads every key from it the moment it is SERVING.
    Returns what the session read from *node*, the stale keys, and the versions written."""
    nemesis.kill(node)
    versions = await write_keys(cluster, history, {k: value for k in keys}, nodes=[via], concurrency=writers)
    await read_all(cluster, via, keys, history=history, process=session, concurrency=1, carry_version=False)
    nemesis.delay(node, catch_up_delay)
    await nemesis.restart(node)  # returns as soon as the node reports SERVING
    got = await read_all(cluster, node, keys, history=history, process=session, concurrency=1,
                         carry_version=False)
    nemesis.heal()
    await cluster.wait_converged(converge_timeout)
    return {"read": got, "stale": sorted(k for k in keys if got[k] != value), "versions": versions}


async def restart_all_round(cluster: KVCluster, history: History, nemesis: Nemesis, *,
                            expected: dict[str, str], how: str, hold_window: float,
                            ready_timeout: float = 30.0) -> dict[str, Any]:
    """kv-02's round: every node goes down (*how*: ``stop`` = SIGTERM, ``kill`` = SIGKILL) and starts
    again while its store is held (a slow disk: recovery cannot finish); each node is read the moment
    its health service reports SERVING (watched, not polled), while held if it says SERVING then, and
    again once the stores are let go. Returns ``rows`` (one per node: what was read against *expected*)
    and ``reads`` (node → when → key → value read)."""
    for n in cluster.names:
        getattr(nemesis, how)(n)
    rows = {n: {"node": n, "signal": "SIGTERM" if how == "stop" else "SIGKILL"} for n in cluster.names}
    reads: dict[str, dict[str, dict[str, str | None]]] = {n: {} for n in cluster.names}
    keys = sorted(expected)

    def score(got: dict[str, str | None]) -> dict[str, int]:
        return {"right": sum(got[k] == expected[k] for k in keys),
                "NOT_FOUND": sum(got[k] is None for k in keys),
                "other value": sum(got[k] is not None and got[k] != expected[k] for k in keys)}

    async def read_when_serving(n: str, within: float, when: str) -> None:
        try:
            seconds = await cluster.watch_serving(n, within)
        except ConditionTimeout:
            rows[n][f"SERVING {when}"] = False
            return
        got = await read_all(cluster, n, keys, history=history, process=f"read-{n}", concurrency=1)
        reads[n][when] = got
        rows[n][f"SERVING {when}"] = True
        rows[n][f"{when}: after s"] = round(seconds, 3)
        rows[n].update({f"{when}: {k}": v for k, v in score(got).items()})

    with contextlib.ExitStack() as held:
        for n in cluster.names:
            held.enter_context(cluster.hold_store_writer(n))
        seen = {n: len(cluster[n].logs()) for n in cluster.names}  # the log file is appended across restarts
        for n in cluster.names:
            await nemesis.restart(n, wait=False)
        for n in cluster.names:
            await wait_until(lambda n=n: any(r["event"] == "store.opening"
                                             for r in cluster[n].logs()[seen[n]:]),
                             ready_timeout, f"{n} starts opening its store")
        await asyncio.gather(*(read_when_serving(n, hold_window, "while store held") for n in cluster.names))
    await asyncio.gather(*(read_when_serving(n, ready_timeout, "after release") for n in cluster.names))
    await cluster.wait_connected(ready_timeout)
    return {"rows": list(rows.values()), "reads": reads}
