"""rpc-05 … rpc-07 (and rpc-08's mechanism): the reconnection window, failback, hung upstreams, pooling.

Each test runs in both modes: ``incident`` (the defect switch on: the symptom must appear) and
``fixed`` (the default proxy: the invariant must hold). Timing is created, never hoped for: a slow
first handshake on the new node holds the reconnection window open, a delay knob keeps requests in
flight, SIGSTOP hangs a node.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from rpcproxy_support import (
    FAST,
    metric,
    node_health,
    sessions,
    start_stack,
    wait_moves,
    wait_moving,
    wait_sessions_on,
    wait_until,
)
from workbook.rpcclient import HttpClient, RequestTimeout, RpcResponseError, WsClient
from workbook.run import Run

MODES = ["fixed", "incident"]


@pytest.mark.parametrize("mode", MODES)
async def test_rpc05_requests_during_the_reconnection_window(run: Run, mode: str) -> None:
    queue_cap, burst, in_flight = 60, 100, 5
    stack = await start_stack(
        run, ("drop-during-reconnect",) if mode == "incident" else (), ws_queue_max_messages=queue_cap
    )
    deadline = 8.0
    async with await WsClient.connect(stack.proxy_ws_url, "geth") as client:
        sub = await client.subscribe("newHeads")
        await client.wait_notifications(sub, 1)
        await wait_sessions_on(stack, "el1")
        # requests held in flight on el1 (5 reads, 1 write), and a slow first handshake on el2
        await stack.admin("el1").set(delay={"eth_gasPrice": 30, "eth_sendRawTransaction": 30})
        await stack.admin("el2").set(slow_handshake={"count": 1, "seconds": 2.0})
        held = [
            asyncio.create_task(client.request("eth_gasPrice", timeout=deadline)) for _ in range(in_flight)
        ]
        held.append(asyncio.create_task(client.request("eth_sendRawTransaction", ["0x00"], timeout=deadline)))

        async def all_in_flight() -> bool:
            return sum(s["in_flight"] for s in await sessions(stack)) >= in_flight + 1

        await wait_until(all_in_flight, 5, "requests in flight on el1")
        await stack.admin("el1").drop_websockets()
        await wait_moving(stack)
        window = [
            asyncio.create_task(client.request("eth_blockNumber", timeout=deadline)) for _ in range(burst)
        ]
        outcomes = await asyncio.gather(*held, *window, return_exceptions=True)
        await stack.admin("el1").reset()

    kinds = Counter(_kind(o) for o in outcomes)
    held_kinds = Counter(_kind(o) for o in outcomes[: in_flight + 1])
    answers_per_id = Counter(f.id for f in client.trace if f.direction == "received" and f.id is not None)
    if mode == "incident":
        assert kinds == {"no answer": in_flight + 1 + burst}, kinds  # every one silently dropped
        assert await metric(stack, "rpcproxy_ws_dropped_messages_total", reason="during_reconnect") == burst
        assert (
            await metric(stack, "rpcproxy_ws_dropped_messages_total", reason="inflight_lost") == in_flight + 1
        )
    else:
        assert held_kinds == {"result": in_flight, "error -32000": 1}, (
            held_kinds
        )  # reads re-sent, write failed
        assert kinds == {
            "result": in_flight + queue_cap,
            "error -32000": 1,
            "error -32005": burst - queue_cap,
        }, kinds  # bounded queue, overflow answered
        sent_ids = [f.id for f in client.trace if f.direction == "sent" and f.id is not None]
        assert all(answers_per_id[i] == 1 for i in sent_ids)  # exactly one answer each
        assert await metric(stack, "rpcproxy_ws_queue_overflow_total") == burst - queue_cap
        assert await metric(stack, "rpcproxy_ws_inflight_resent_total") == in_flight


def _kind(outcome: object) -> str:
    if isinstance(outcome, RpcResponseError):
        return f"error {outcome.code}"
    if isinstance(outcome, RequestTimeout):
        return "no answer"
    if isinstance(outcome, BaseException):
        return f"exception {type(outcome).__name__}"
    return "result"


@pytest.mark.parametrize("mode", MODES)
async def test_rpc06_sessions_switch_back_to_the_recovered_primary(run: Run, mode: str) -> None:
    stack = await start_stack(run, ("no-failback",) if mode == "incident" else ())
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as client:
        sub = await client.subscribe("newHeads")
        await client.wait_notifications(sub, 2)
        await wait_sessions_on(stack, "el1")
        stack.kill("el1")
        await wait_sessions_on(stack, "el2")
        await stack.restart("el1")
        if mode == "incident":
            settle = FAST["failback_after"] + 10 * FAST["health_interval"]

            async def primary_healthy_long_enough() -> bool:
                node = await node_health(stack, "el1")
                return node["healthy"] and node["healthy_for"] >= settle

            await wait_until(primary_healthy_long_enough, 15, "el1 healthy again for a while")
            assert [s["upstream"] for s in await sessions(stack)] == ["el2"]  # stuck on the backup
            assert await metric(stack, "rpcproxy_ws_sessions", upstream="el2") == 1
            assert await metric(stack, "rpcproxy_ws_sessions", upstream="el1") == 0
        else:
            await wait_sessions_on(stack, "el1")
            assert await metric(stack, "rpcproxy_ws_sessions", upstream="el1") == 1
            assert await metric(stack, "rpcproxy_ws_sessions", upstream="el2") == 0
            logs = stack.proxy.logs()
            healthy_at = max(
                r["ts"] for r in logs if r["event"] == "upstream.healthy" and r["upstream"] == "el1"
            )
            moved_at = max(r["ts"] for r in logs if r["event"] == "ws.moved" and r["reason"] == "failback")
            budget = FAST["failback_after"] + 2 * FAST["health_interval"]
            assert moved_at - healthy_at <= budget + 1.0, (moved_at - healthy_at, budget)
            # the client noticed nothing: same subscription, every head once, no gap, answers as before
            seen = len(client.notifications(sub))
            await client.wait_notifications(sub, seen + 2)
            numbers = [int(h["number"], 16) for h in client.notifications(sub)]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
            assert int(await client.request("eth_blockNumber"), 16) >= numbers[-1]
            assert not client.protocol_errors


@pytest.mark.parametrize("mode", MODES)
async def test_rpc07_hung_upstream_and_health_checks(run: Run, mode: str) -> None:
    stack = await start_stack(run, ("health-without-timeout",) if mode == "incident" else ())
    http = HttpClient(stack.proxy_http_url, timeout=10)
    ws = await WsClient.connect(stack.proxy_ws_url, "strict")
    try:
        sub = await ws.subscribe("newHeads")
        await wait_sessions_on(stack, "el1")
        assert int(await http.request("eth_blockNumber"), 16) > 0
        rounds_before = (await stack.status())["rounds"]
        paused_at = time.monotonic()
        stack.pause("el1")
        if mode == "incident":
            await _monitor_stuck(stack, quiet=10 * FAST["health_interval"])
            with pytest.raises(RequestTimeout):  # routing waits for the monitor's lock
                await http.request("eth_blockNumber", timeout=2.0)
            status = await stack.status()
            assert status["rounds"] <= rounds_before + 1  # the monitor is stuck on el1's check
            assert next(n for n in status["nodes"] if n["name"] == "el1")["healthy"]  # no failover
            assert [s["upstream"] for s in status["session_details"]] == ["el1"]  # the session hangs with it
        else:
            latencies = []
            for _ in range(8):
                started = time.monotonic()
                assert int(await http.request("eth_blockNumber", timeout=5.0), 16) > 0
                latencies.append(time.monotonic() - started)

            async def el1_unhealthy() -> bool:
                return not (await node_health(stack, "el1"))["healthy"]

            await wait_until(el1_unhealthy, 5, "el1 marked unhealthy")
            detection = time.monotonic() - paused_at
            budget = FAST["unhealthy_after"] * FAST["health_interval"] + FAST["check_timeout"]
            assert detection <= budget + 2.0, (detection, budget)
            # bounded: a request to the hung node costs at most one request_timeout before the retry
            assert max(latencies) <= FAST["request_timeout"] + 1.0, latencies
            assert (await stack.status())["rounds"] >= rounds_before + 2  # checks kept running
            await wait_sessions_on(stack, "el2")  # the WebSocket session left the hung node
            seen = len(ws.notifications(sub))
            await ws.wait_notifications(sub, seen + 2)
    finally:
        stack.resume("el1")
        await http.close()
        await ws.close()


async def _monitor_stuck(stack: object, quiet: float) -> None:
    """Wait until the monitor has completed no round for *quiet* seconds (stuck on a check)."""
    last = {"rounds": -1, "since": time.monotonic()}

    async def stuck() -> bool:
        rounds = (await stack.status())["rounds"]  # type: ignore[attr-defined]
        if rounds != last["rounds"]:
            last.update(rounds=rounds, since=time.monotonic())
        return time.monotonic() - last["since"] >= quiet

    await wait_until(stuck, 10, "the health monitor stalled")


@pytest.mark.parametrize("mode", MODES)
async def test_rpc08_mechanism_upstream_connections_per_request(run: Run, mode: str) -> None:
    requests = 40
    stack = await start_stack(run, ("client-per-request",) if mode == "incident" else ())
    async with HttpClient(stack.proxy_http_url) as http:
        for _ in range(requests):
            assert int(await http.request("eth_blockNumber"), 16) > 0
    opened = await metric(stack, "rpcproxy_upstream_http_connections_total")
    if mode == "incident":
        assert opened >= requests  # one TCP connection per request
    else:
        assert opened <= 2  # sequential requests reuse the pooled connection


async def test_heads_missed_during_a_slow_move_are_filled_in_order(run: Run) -> None:
    stack = await start_stack(run)
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as client:
        sub = await client.subscribe("newHeads")
        await client.wait_notifications(sub, 2)
        await wait_sessions_on(stack, "el1")
        await stack.admin("el2").set(slow_handshake={"count": 1, "seconds": 1.5})  # ~6 blocks of silence
        await stack.admin("el1").drop_websockets()
        await wait_moving(stack)
        await wait_moves(stack, 2)  # on el2 (soon back on el1: the failback may follow at once)
        # The filled blocks arrive as notifications too: wait for the head that was current after the
        # move, not for "two more notifications" (the first two fills would satisfy that mid-fill).
        head = int((await stack.node_health("el2"))["head"])

        def reached() -> bool:
            return any(int(h["number"], 16) >= head for h in client.notifications(sub))

        await client.wait_for(reached, 10, f"head {head} delivered")
    numbers = [int(h["number"], 16) for h in client.notifications(sub)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert await metric(stack, "rpcproxy_ws_gap_blocks_filled_total") >= 3


async def test_heads_a_lagging_backup_repeats_are_not_delivered_twice(run: Run) -> None:
    stack = await start_stack(run)
    await stack.admin("el2").set(lag_blocks=2)  # within max_lag_blocks: still healthy
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as client:
        sub = await client.subscribe("newHeads")
        await client.wait_notifications(sub, 2)
        await wait_sessions_on(stack, "el1")
        stack.kill("el1")
        await wait_sessions_on(stack, "el2")
        seen = len(client.notifications(sub))
        await client.wait_notifications(sub, seen + 2)
    numbers = [int(h["number"], 16) for h in client.notifications(sub)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert await metric(stack, "rpcproxy_ws_heads_deduplicated_total") >= 1
