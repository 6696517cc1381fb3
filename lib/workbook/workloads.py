"""Workloads: the clients' side of a scenario, each one call that records into a :class:`History`.

KV: :func:`write_unique` (a set: unique keys), :func:`write_register` (one key, one logical writer,
a concurrent reader), :func:`read_all`, :func:`present_anywhere`, and :func:`crash_cycle` (kv-01's
write / ``kill -9`` / restart / read-back, shared by the notebook and the tests). RPC:
:func:`request_stream` (requests at a steady rate), :func:`subscribed_sessions` (WebSocket sessions each
holding a newHeads subscription), :func:`session_requests` (each session asks at its own pace) and
:func:`session_steps` (one session through a list of steps, for a property search). Each operation
goes through the client's own
outcome rule (:func:`~workbook.kvcluster.kv_outcome`, :func:`~workbook.rpcclient.rpc_outcome`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from kvstore.client import AsyncKVClient, KeyNotFound

from workbook import checkers
from workbook._exceptions import ConditionTimeout, ServiceError
from workbook.history import History, Op
from workbook.kvcluster import KVCluster, kv_outcome, kv_result
from workbook.nemesis import Nemesis
from workbook.waiting import wait_until

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


# The seed's five subscriptions of one production connection (rpc-02): heads, two log filters, pending
# transactions and syncing. TRANSFER_TOPIC is ERC-20 Transfer(address,address,uint256).
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
FIVE_SUBSCRIPTIONS: tuple[tuple[Any, ...], ...] = (
    ("newHeads",), ("logs", {}), ("logs", {"topics": [TRANSFER_TOPIC]}), ("newPendingTransactions",),
    ("syncing",))


def subscription_label(params: Sequence[Any]) -> str:
    """A short name for an ``eth_subscribe`` parameter list: ``newHeads``, ``logs {topics: 1}``."""
    kind, *rest = params
    if kind == "logs" and rest and isinstance(rest[0], dict) and rest[0]:
        return "logs " + ", ".join(f"{k}: {len(v) if isinstance(v, list) else v}" for k, v in rest[0].items())
    return f"{kind} (all)" if kind == "logs" else str(kind)


async def subscribe_clients(clients: Iterable[Any], subscriptions: Sequence[Sequence[Any]], *,
                            first_id: int | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """Subscribe every client (a ``WsClient``) to each of *subscriptions* (``eth_subscribe`` params),
    one after another; with *first_id* the requests carry ids first_id, first_id+1, ... (the seed's
    100, 101, ...), else the client's own. One row per subscription: client, id, label, subscription."""
    rows = []
    for client in clients:
        for i, params in enumerate(subscriptions):
            req_id = None if first_id is None else first_id + i
            sub = await client.request("eth_subscribe", list(params), id=req_id, timeout=timeout)
            rows.append({"client": client.name, "kind": client.kind, "request id": req_id,
                         "subscription": subscription_label(params), "subscription id": sub})
    return rows


def notification_rows(clients: Iterable[Any], history: History,
                      labels: dict[tuple[str, str], str] | None = None) -> list[dict[str, Any]]:
    """Every subscription notification the clients received, by arrival (history time): client, the
    subscription id it came under, whether the client holds that id, and its label (*labels*: (client,
    subscription id) -> name; ids the client does not hold are labelled "unknown id")."""
    rows = []
    for client in clients:
        for frame in client.trace:
            if frame.direction != "received" or frame.kind not in ("notification-known-sub",
                                                                  "notification-unknown-sub"):
                continue
            sub = frame.message["params"].get("subscription")
            known = frame.kind == "notification-known-sub"
            label = (labels or {}).get((client.name, sub), sub) if known else "unknown id"
            rows.append({"t": history.at(frame.wall), "client": client.name, "subscription id": sub,
                         "known": known, "subscription": label})
    return rows


async def force_move(stack: Any, nemesis: Nemesis, *, how: str = "kill", node: str = "el1",
                     to: str = "el2", sessions: int = 1, moves: int | None = None,
                     timeout: float = 15.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Make the proxy move its sessions off *node* and wait until they settled: *how* is ``kill`` or
    ``stop`` (the node dies: *sessions* settle on *to*) or ``drop`` (the node closes its WebSockets; with
    *moves*, wait until every session has made that many moves, the first attach included, e.g. 3 for
    the move away and the failback). Returns the fault's history time and seconds until settled."""
    if how in ("kill", "stop"):
        at = getattr(nemesis, how)(node)
    elif how == "drop":
        at = await nemesis.drop_websockets(node)
    else:
        raise ValueError(f"how must be kill, stop or drop, not {how!r}")
    if moves is not None:
        await stack.wait_moves(moves, timeout=timeout)
        settle = await stack.wait_sessions_on(node if how == "drop" else to, count=sessions, timeout=timeout)
    else:
        settle = await stack.wait_sessions_on(to, count=sessions, timeout=timeout)
    return {"fault": how, "node": node, "at": at, "settled": nemesis.history.at(time.time()),
            "settle_seconds": settle}


async def request_streams(clients: Iterable[Any], method: str = "eth_blockNumber", *, rate: float,
                          duration: float | None = None, stop: asyncio.Event | None = None,
                          timeout: float = 2.0) -> int:  # noqa: ASYNC109
    """:func:`request_stream` on every client at once (each at *rate* requests/s, one at a time, as a
    strict client must); returns how many requests were sent in all."""
    sent = await asyncio.gather(*(request_stream(c, method, rate=rate, duration=duration, stop=stop,
                                                 timeout=timeout) for c in clients))
    return sum(sent)


def share_over_time(history: History, *, bin_seconds: float, group: Callable[[dict[str, Any]], str],
                    f: str | None = None) -> list[dict[str, Any]]:
    """Per time bin (by send time; ``t`` is the bin's middle) and group: requests sent, answered
    (ok/fail), unanswered (info or pending) and the unanswered share. *group* maps an operation row to
    its group (e.g. the client kind)."""
    bins: dict[tuple[int, str], dict[str, Any]] = {}
    for row in history.operations(f=f):
        if row["process"] == "nemesis":
            continue
        key = (int(row["invoke_time"] // bin_seconds), group(row))
        b = bins.setdefault(key, {"t": (key[0] + 0.5) * bin_seconds, "group": key[1], "sent": 0,
                                  "answered": 0, "unanswered": 0})
        b["sent"] += 1
        b["answered" if row["type"] in ("ok", "fail") else "unanswered"] += 1
    out = sorted(bins.values(), key=lambda b: (b["group"], b["t"]))
    for b in out:
        b["unanswered share"] = b["unanswered"] / b["sent"]
    return out


def latency_over_time(history: History, *, bin_seconds: float, group: Callable[[dict[str, Any]], str],
                      f: str | None = None, quantiles: Sequence[float] = (0.5, 0.99)) -> list[dict[str, Any]]:
    """Per time bin (by send time) and group: latency quantiles (seconds) of the answered (ok)
    requests, one row per quantile (``t``, ``series`` = "group p50", ``latency``)."""
    bins: dict[tuple[int, str], list[float]] = {}
    for row in history.operations(f=f):
        if row["process"] == "nemesis" or row["type"] != "ok":
            continue
        key = (int(row["invoke_time"] // bin_seconds), group(row))
        bins.setdefault(key, []).append(row["complete_time"] - row["invoke_time"])
    out = []
    for (b, name), values in sorted(bins.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ordered = sorted(values)
        for q in quantiles:
            value = ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
            out.append({"t": (b + 0.5) * bin_seconds, "series": f"{name} p{round(q * 100)}", "latency": value,
                        "count": len(values)})
    return out




async def subscribed_sessions(url: str, history: History | None, *, count: int,
                              kinds: Sequence[str] = ("geth",), name: str = "ws",
                              subscription: str = "newHeads", timeout: float = 10.0  # noqa: ASYNC109
                              ) -> list[tuple[Any, str]]:
    """Open *count* WebSocket sessions to *url* (client kinds taken from *kinds* in turn, named
    ``{name}{i}``), each subscribed to *subscription*; returns (client, subscription id) pairs."""
    from workbook.rpcclient import WsClient

    async def one(i: int) -> tuple[Any, str]:
        client = await WsClient.connect(url, kinds[i % len(kinds)], name=f"{name}{i}",  # type: ignore[arg-type]
                                        history=history, open_timeout=timeout)
        try:
            return client, await client.subscribe(subscription, timeout=timeout)
        except Exception:
            await client.close()
            raise

    opened = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    failed = [o for o in opened if isinstance(o, BaseException)]
    if failed:
        await asyncio.gather(*(o[0].close() for o in opened if not isinstance(o, BaseException)))
        raise failed[0]
    return [o for o in opened if not isinstance(o, BaseException)]


async def session_requests(clients: Iterable[Any], *, period: float, stop: asyncio.Event,
                           method: str = "eth_blockNumber", timeout: float = 2.0) -> int:  # noqa: ASYNC109
    """Every client sends *method* once per *period* seconds, one at a time (as the seed's k6 sessions
    do), until *stop*; each request is recorded by the client's history. Returns how many were sent."""
    counts = await asyncio.gather(*(request_stream(c, method, rate=1 / period, stop=stop, timeout=timeout)
                                    for c in clients))
    return sum(counts)


def _answers_in(trace: Sequence[Any]) -> tuple[Counter[str], Counter[str]]:
    sent: Counter[str] = Counter()
    got: Counter[str] = Counter()
    for frame in trace:
        message = frame.message
        if isinstance(message, dict) and "id" in message and "method" not in message \
                and frame.direction == "received":
            got[repr(message["id"])] += 1
        elif isinstance(message, dict) and "id" in message and frame.direction == "sent":
            sent[repr(message["id"])] += 1
    return sent, got


async def session_steps(stack: Any, steps: Sequence[Sequence[Any]], *, name: str = "session",
                        history: History | None = None, nemesis: Nemesis | None = None,
                        timeout: float = 5.0) -> list[Any]:  # noqa: ASYNC109
    """Run *steps* on one fresh WebSocket session through *stack*'s proxy; returns the client's trace.

    Steps: ``("subscribe", params, id)``, ``("unsubscribe", pick, id)`` (the *pick*-th held subscription,
    or an id nobody holds), ``("request", method, params, id, times)`` (*times* copies of one id in
    flight), ``("move",)`` (the session's upstream drops its WebSockets; the session moves). After each
    step every request has its answers (or *timeout* passed); after a move the session has settled and
    a sync request (id ``sync-N``) has its answer, so whatever the move sent the client is in the trace.
    The trace ends with one more sync. Each step is an operation of process *name* in *history*."""
    from workbook.rpcclient import WsClient

    await wait_until(lambda: _no_sessions(stack), timeout, "no proxy session left from before")
    client = await WsClient.connect(stack.proxy_ws_url, "geth", name=name, open_timeout=timeout)
    syncs = 0

    async def settle() -> None:
        def answered() -> bool:
            sent, got = _answers_in(client.trace)
            return all(got[k] >= n for k, n in sent.items()) or client.closed
        try:
            await client.wait_for(answered, timeout, "every request answered")
        except Exception:  # an unanswered request is an observation: the checker reports it
            pass

    async def sync() -> None:
        nonlocal syncs
        syncs += 1
        await send({"id": f"sync-{syncs}", "method": "eth_chainId", "params": []})
        await settle()

    async def send(message: dict[str, Any]) -> None:
        await client.send_raw({"jsonrpc": "2.0", **message})

    async def run(step: Sequence[Any]) -> None:
        kind = step[0]
        if kind == "subscribe":
            await send({"id": step[2], "method": "eth_subscribe", "params": list(step[1])})
        elif kind == "unsubscribe":
            held = checkers.session_stream(client.trace)["held"]
            target = held[step[1] % len(held)] if held else "0x" + "0" * 32
            await send({"id": step[2], "method": "eth_unsubscribe", "params": [target]})
        elif kind == "request":
            for _ in range(step[4]):
                await send({"id": step[3], "method": step[1], "params": list(step[2])})
        elif kind == "move":
            session = (await stack.sessions())[0]
            if nemesis is not None:
                await nemesis.drop_websockets(session["upstream"])
            else:
                await stack.admin(session["upstream"]).drop_websockets()
            await stack.wait_moves(session["moves"] + 1, timeout)
        else:
            raise ValueError(f"unknown step {step!r}")
        await settle()
        if kind == "move":
            await sync()

    try:
        await stack.wait_moves(1, timeout)
        for step in steps:
            if history is None:
                await run(step)
            else:
                await history.record(name, step[0], lambda s=step: run(s), value=list(step[1:]), reraise=True)
        await sync()
    finally:
        await client.close()
    return list(client.trace)


async def _no_sessions(stack: Any) -> bool:
    return not await stack.sessions()


def property_search(strategy: Any, failing: Callable[[Any], Awaitable[bool]], *, examples: int,
                    seed: int) -> dict[str, Any]:
    """Search *strategy* for an input on which ``await failing(x)`` is true, shrink it, and return
    ``{"counterexample": x or None, "examples": calls made, "shrinks": calls after the first failure}``.

    Hypothesis's ``find`` with a seeded ``random`` and no example database: the same seed, the same
    search, the same smallest counterexample (as long as *failing* is a function of its input). It runs
    on a private event loop, so call it through ``asyncio.to_thread`` from a notebook."""
    import random

    from hypothesis import HealthCheck, find, settings
    from hypothesis.errors import NoSuchExample

    calls = {"n": 0, "first": None}
    loop = asyncio.new_event_loop()

    def condition(x: Any) -> bool:
        calls["n"] += 1
        found = loop.run_until_complete(failing(x))
        if found and calls["first"] is None:
            calls["first"] = calls["n"]
        return found

    config = settings(max_examples=examples, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck))
    try:
        example = find(strategy, condition, settings=config, random=random.Random(seed))
    except NoSuchExample:
        example = None
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    first = calls["first"]
    return {"counterexample": example, "examples": calls["n"], "first_failure_at": first,
            "shrinks": calls["n"] - first if first is not None else 0}


async def sample_processes(processes: Mapping[str, Any], *, every: float,
                           stop: asyncio.Event) -> list[dict[str, Any]]:
    """Every *every* seconds until *stop*, each process's CPU seconds and resident memory (anything
    with ``usage() -> (cpu_seconds, rss_bytes)``, such as a :class:`~workbook.service.Service`): rows
    ``{wall, process, cpu_s, rss_mb}``, one first at once and one last at *stop*."""
    rows: list[dict[str, Any]] = []

    def sample() -> None:
        now = time.time()
        for name, proc in processes.items():
            cpu, rss = proc.usage()
            rows.append({"wall": now, "process": name, "cpu_s": cpu, "rss_mb": rss / 2**20})

    sample()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
        sample()
    return rows


async def forced_reconnections(nemesis: Nemesis, node: str, *, every: float, stop: asyncio.Event) -> int:
    """*node* closes every WebSocket (the proxy's upstream links on it) every *every* seconds until
    *stop*: the sessions on it must reconnect. Returns how many times."""
    count = 0
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every)
            return count
        except TimeoutError:
            await nemesis.drop_websockets(node)
            count += 1


__all__ = [
    "FIVE_SUBSCRIPTIONS",
    "TRANSFER_TOPIC",
    "converges_within",
    "crash_cycle",
    "force_move",
    "forced_reconnections",
    "latency_over_time",
    "notification_rows",
    "partial_failure",
    "partition_round",
    "present_anywhere",
    "property_search",
    "read_all",
    "request_stream",
    "request_streams",
    "restart_all_round",
    "sample_processes",
    "session_requests",
    "session_steps",
    "share_over_time",
    "stale_read_round",
    "subscribe_clients",
    "subscribed_sessions",
    "subscription_label",
    "write_keys",
    "write_register",
    "write_unique",
]
