"""RPC workloads: request streams, subscriptions and proxy sessions, and views of their history."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from workbook import checkers
from workbook.history import History
from workbook.nemesis import Nemesis
from workbook.waiting import wait_until


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
