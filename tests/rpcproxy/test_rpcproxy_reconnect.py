"""rpc-01 … rpc-04: WebSocket sessions across a reconnection, each in both modes.

``incident`` runs the proxy with the historical defect switch and asserts the symptom appears;
``fixed`` runs the default proxy and asserts the invariant the bug broke.
"""

from __future__ import annotations

import time

import pytest
from rpcproxy_support import metric, start_stack, wait_moves, wait_sessions_on
from workbook.rpcclient import (
    NOTIFICATION_UNKNOWN_SUB,
    UNSOLICITED_RESPONSE,
    RequestTimeout,
    WsClient,
)
from workbook.run import Run

MODES = ["fixed", "incident"]
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def _is_head(message: dict) -> bool:
    result = message["params"]["result"]
    return isinstance(result, dict) and "number" in result and "parentHash" in result


def _unsolicited(client: WsClient) -> list[dict]:
    return [f.message for f in client.trace if f.kind == UNSOLICITED_RESPONSE]


@pytest.mark.parametrize("mode", MODES)
async def test_rpc01_regular_requests_after_reconnection(run: Run, mode: str) -> None:
    stack = await start_stack(run, ("replay-leak",) if mode == "incident" else ())
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as client:
        sub = await client.subscribe("newHeads")
        subscribe_id = next(f.id for f in client.trace if f.method == "eth_subscribe")
        await client.wait_notifications(sub, 1)
        assert int(await client.request("eth_blockNumber"), 16) > 0
        await wait_sessions_on(stack, "el1")
        stack.kill("el1")
        await wait_moves(stack, 2)  # the initial attach, then the failover
        await wait_sessions_on(stack, "el2")
        if mode == "incident":
            assert [m["id"] for m in _unsolicited(client)] == [
                subscribe_id
            ]  # the replayed subscribe's answer
            with pytest.raises(RequestTimeout):
                await client.request("eth_blockNumber", timeout=2.0)
            assert client.desynchronised and client.protocol_errors
        else:
            assert int(await client.request("eth_blockNumber"), 16) > 0
            assert not _unsolicited(client) and not client.protocol_errors
            seen = len(client.notifications(sub))
            await client.wait_notifications(sub, seen + 2)  # same subscription id, still flowing
            assert await metric(stack, "rpcproxy_ws_replayed_subscriptions_total", outcome="ok") == 1


@pytest.mark.parametrize("mode", MODES)
async def test_rpc02_five_subscriptions_across_two_moves(run: Run, mode: str) -> None:
    defects = ("replay-leak", "unmapped-subscriptions") if mode == "incident" else ()
    stack = await start_stack(run, defects)
    async with await WsClient.connect(stack.proxy_ws_url, "geth") as client:
        subs = [
            await client.subscribe("newHeads"),
            await client.subscribe("logs", {}),
            await client.subscribe("logs", {"topics": [TRANSFER_TOPIC]}),
            await client.subscribe("newPendingTransactions"),
            await client.subscribe("newHeads"),
        ]
        assert len(set(subs)) == 5
        for sub in subs:
            await client.wait_notifications(sub, 1)
        # The client registers an id only once eth_subscribe returns, so a notification right behind the
        # answer may count as unknown: judge from here on.
        mark = len(client.trace)
        await wait_sessions_on(stack, "el1")
        await stack.admin("el1").drop_websockets()  # move 1: to el2; move 2: failback to el1
        await wait_moves(stack, 3)
        await wait_sessions_on(stack, "el1")
        if mode == "incident":
            unknown = lambda: [f for f in client.trace[mark:] if f.kind == NOTIFICATION_UNKNOWN_SUB]  # noqa: E731
            await client.wait_for(lambda: len(unknown()) >= 1, what="a notification under an unknown id")
            held = {sub: len(client.notifications(sub)) for sub in subs}
            # two more blocks' worth of notifications, all under ids the client never saw
            await client.wait_for(
                lambda: sum(1 for f in unknown() if _is_head(f.message)) >= 4,
                what="more heads under unknown ids",
            )
            assert {
                sub: len(client.notifications(sub)) for sub in subs
            } == held  # the client's subs are silent
            assert len(_unsolicited(client)) >= 5  # the replays' answers, twice over
        else:
            counts = {sub: len(client.notifications(sub)) for sub in subs}
            for sub in subs:
                await client.wait_notifications(sub, counts[sub] + 1, timeout=15)
            assert not [f for f in client.trace[mark:] if f.kind == NOTIFICATION_UNKNOWN_SUB]
            assert not _unsolicited(client)
        fresh_id = 10_000
        assert int(await client.request("eth_blockNumber", id=fresh_id), 16) > 0
        answers = [f for f in client.trace if f.direction == "received" and f.id == fresh_id]
        assert len(answers) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_rpc03_client_reuses_a_request_id(run: Run, mode: str) -> None:
    stack = await start_stack(run, ("replay-leak",) if mode == "incident" else ())
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as client:
        sub = await client.request("eth_subscribe", ["newHeads"], id=100)
        client.notifications(sub)  # start collecting under the id the proxy gave
        await client.wait_notifications(sub, 1)
        await wait_sessions_on(stack, "el1")
        stack.kill("el1")
        await wait_moves(stack, 2)
        answer = await client.request("eth_blockNumber", id=100)
        if mode == "incident":
            leaked = _unsolicited(client)
            assert leaked and leaked[0]["id"] == 100
            assert answer == leaked[0]["result"]  # the replayed subscription's id, not a block number
            assert len(answer) == 2 + 32  # a 16-byte subscription id, not a block number
        else:
            assert int(answer, 16) >= int(client.notifications(sub)[0]["number"], 16)
            assert not _unsolicited(client) and not client.protocol_errors


@pytest.mark.parametrize("mode", MODES)
async def test_rpc04_steady_requests_after_reconnection(run: Run, mode: str) -> None:
    soak, period, deadline = 2.5, 0.05, 0.5
    stack = await start_stack(run, ("replay-leak",) if mode == "incident" else ())
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as client:
        await client.subscribe("newHeads")
        before = [await _timed(client, deadline) for _ in range(20)]
        assert all(ok for ok, _ in before)
        await wait_sessions_on(stack, "el1")
        stack.kill("el1")
        await wait_moves(stack, 2)
        after = []
        end = time.monotonic() + soak
        while time.monotonic() < end:
            after.append(await _timed(client, deadline))
            await _pace(period)
        answered = sum(1 for ok, _ in after if ok)
        if mode == "incident":
            assert answered == 0 and len(after) >= 3  # every request after the move times out
            async with await WsClient.connect(stack.proxy_ws_url, "strict") as fresh:
                assert int(await fresh.request("eth_blockNumber"), 16) > 0  # a new connection works
        else:
            assert answered == len(after) and len(after) >= 10
            assert not client.protocol_errors


async def _timed(client: WsClient, deadline: float) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        await client.request("eth_blockNumber", timeout=deadline)
    except RequestTimeout:
        return False, time.monotonic() - started
    return True, time.monotonic() - started


async def _pace(period: float) -> None:
    import asyncio

    await asyncio.sleep(period)  # the request rate of the soak, not synchronisation
