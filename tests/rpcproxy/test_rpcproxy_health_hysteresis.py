"""Health hysteresis against real elnodes: a primary that flaps faster than the recovery threshold.

el1 (the primary) first fails every check until the proxy marks it unhealthy and the WebSocket sessions
move to el2. Then el1 fails one ``eth_blockNumber`` in every M (elnode's deterministic ``fail`` fraction
1/M): the proxy's checks see M-1 good answers, a failure, M-1 good answers, … and el1 must stay unhealthy,
with no session moving. Once el1 answers every check, the proxy marks it healthy after exactly M good
checks (counted in el1's own request log) and, ``failback_after`` later, every session moves back once.
Under ``no-failback`` (rpc-06's defect) the sessions stay on el2.
"""

from __future__ import annotations

from typing import Any

import pytest
from rpcproxy_support import FAST, metric, node_health, sessions, start_stack, wait_sessions_on, wait_until
from workbook.ethstack import EthStack
from workbook.rpcclient import WsClient
from workbook.run import Run

M = 4  # healthy_after: good checks in a row before an unhealthy node is healthy again
FAILBACK_AFTER = 0.5  # seconds a recovered primary must stay healthy before sessions move back
SESSIONS = 3
FLAPS = 3  # failed checks after the first run of M-1 good ones: each ends a run of M-1 good checks
SETTINGS: dict[str, Any] = {
    **FAST,
    "healthy_after": M,
    "unhealthy_after": 2,
    "failback_after": FAILBACK_AFTER,
}
CHECK = "eth_blockNumber"  # the health check; nothing else asks el1 for it in these tests


async def _checks(stack: EthStack, outcome: str) -> float:
    return await metric(stack, "rpcproxy_health_checks_total", upstream="el1", outcome=outcome)


async def _moves(stack: EthStack) -> dict[str, float]:
    return {
        reason: await metric(stack, "rpcproxy_ws_moves_total", reason=reason, outcome="ok")
        for reason in ("initial", "unhealthy", "upstream_closed", "failback")
    }


async def _became_healthy(stack: EthStack) -> float:
    return await metric(stack, "rpcproxy_upstream_transitions_total", upstream="el1", to="healthy")


def _good_checks_before_recovery(stack: EthStack) -> int:
    """el1's successful health-check answers between its last failed one and the proxy marking it healthy
    (the proxy logs the transition after the round whose answers it judged: later in time)."""
    healthy_at = max(
        r["ts"] for r in stack.proxy.logs() if r["event"] == "upstream.healthy" and r["upstream"] == "el1"
    )
    answers = [
        r
        for r in stack.nodes["el1"].logs()
        if r["event"] == "rpc.request" and r.get("transport") == "http" and r.get("method") == CHECK
    ]
    last_failure = max(r["ts"] for r in answers if r["outcome"] != "ok")
    return sum(1 for r in answers if r["outcome"] == "ok" and last_failure < r["ts"] < healthy_at)


@pytest.mark.parametrize("mode", ["fixed", "incident"])
async def test_a_flapping_primary_is_not_trusted_until_it_holds_for_m_checks(run: Run, mode: str) -> None:
    stack = await start_stack(run, ("no-failback",) if mode == "incident" else (), **SETTINGS)
    el1 = stack.admin("el1")
    clients = [await WsClient.connect(stack.proxy_ws_url, "strict") for _ in range(SESSIONS)]
    try:
        subs = [await c.subscribe("newHeads") for c in clients]
        for client, sub in zip(clients, subs, strict=True):
            await client.wait_notifications(sub, 1)
        await wait_sessions_on(stack, "el1", SESSIONS)

        # 1. el1 fails every check: unhealthy after unhealthy_after, the sessions leave it once
        await el1.set(fail={CHECK: {"message": "injected: health check refused"}})

        async def el1_unhealthy() -> bool:
            return not (await node_health(stack, "el1"))["healthy"]

        await wait_until(el1_unhealthy, 10, "el1 marked unhealthy")
        await wait_sessions_on(stack, "el2", SESSIONS)
        moves = await _moves(stack)
        assert moves["unhealthy"] == SESSIONS, moves
        recoveries = await _became_healthy(stack)

        # 2. el1 flaps: M-1 good checks, one failure, M-1 good checks, ...
        errors = await _checks(stack, "error")
        await el1.set(fail={CHECK: {"fraction": 1 / M, "message": "injected: flapping"}})

        async def one_short_of_m() -> bool:
            node = await node_health(stack, "el1")
            assert not node["healthy"], f"el1 trusted again while flapping: {node}"
            return node["consecutive_successes"] == M - 1

        await wait_until(one_short_of_m, 10, f"el1 answered {M - 1} checks in a row (one short of M)")

        async def flapped() -> bool:
            assert not (await node_health(stack, "el1"))["healthy"], "el1 trusted again while flapping"
            return await _checks(stack, "error") >= errors + FLAPS

        await wait_until(flapped, 15, f"el1 failed {FLAPS} checks between runs of {M - 1} good ones")
        assert await _checks(stack, "ok") > 0
        assert await _became_healthy(stack) == recoveries  # exact: a counter, not a sampled state
        assert await _moves(stack) == moves, "sessions moved while el1 flapped"
        assert [(s["upstream"], s["moves"]) for s in await sessions(stack)] == [("el2", 2)] * SESSIONS

        # 3. el1 holds: healthy after exactly M good checks, then the failback dwell
        await el1.set(fail={CHECK: None})

        async def el1_healthy() -> bool:
            return (await node_health(stack, "el1"))["healthy"]

        await wait_until(el1_healthy, 10, "el1 healthy again")
        assert await _became_healthy(stack) == recoveries + 1
        assert _good_checks_before_recovery(stack) >= M

        if mode == "incident":
            settle = FAILBACK_AFTER + 10 * SETTINGS["health_interval"]

            async def healthy_long_enough() -> bool:
                return (await node_health(stack, "el1"))["healthy_for"] >= settle

            await wait_until(healthy_long_enough, 10, "el1 healthy for well past failback_after")
            assert [s["upstream"] for s in await sessions(stack)] == ["el2"] * SESSIONS  # stuck on the backup
            assert (await _moves(stack))["failback"] == 0
            return

        await wait_sessions_on(stack, "el1", SESSIONS)
        _assert_failbacks_waited_for_the_dwell(stack)
        after = await _moves(stack)
        assert after == {**moves, "failback": SESSIONS}, after  # each session moved back exactly once
        rounds = (await stack.status())["rounds"]

        async def later() -> bool:
            return (await stack.status())["rounds"] >= rounds + 5

        await wait_until(later, 10, "five more health rounds")
        assert await _moves(stack) == after
        assert [(s["upstream"], s["moves"]) for s in await sessions(stack)] == [("el1", 3)] * SESSIONS
        for client, sub in zip(clients, subs, strict=True):
            numbers = [int(h["number"], 16) for h in client.notifications(sub)]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
            assert not client.protocol_errors
    finally:
        for client in clients:
            await client.close()


def _assert_failbacks_waited_for_the_dwell(stack: EthStack) -> None:
    logs = stack.proxy.logs()
    healthy_at = max(r["ts"] for r in logs if r["event"] == "upstream.healthy" and r["upstream"] == "el1")
    failbacks = [r["ts"] for r in logs if r["event"] == "ws.moved" and r["reason"] == "failback"]
    assert len(failbacks) == SESSIONS
    # the dwell is measured on the monotonic clock, the log stamps on the wall clock: 20 ms of slack
    assert all(ts - healthy_at >= FAILBACK_AFTER - 0.02 for ts in failbacks), (healthy_at, failbacks)
