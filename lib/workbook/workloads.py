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
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from kvstore.client import AsyncKVClient, KeyNotFound

from workbook import checkers
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


__all__ = ["crash_cycle", "forced_reconnections", "present_anywhere", "property_search", "read_all",
           "request_stream", "sample_processes", "session_requests", "session_steps", "subscribed_sessions",
           "write_register", "write_unique"]
