"""Every fault knob: its effect, and that removing it removes the effect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from conftest import clock_head, until
from elnode.admin import AdminClient, AdminError
from workbook.rpcclient import HttpClient, RpcResponseError, WsClient
from workbook.service import Service


async def test_stall_freezes_the_head_and_its_removal_catches_up(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    async with HttpClient(node.url("http")) as http, await WsClient.connect(node.url("ws"), "geth") as ws:
        heads = await ws.subscribe("newHeads")
        await ws.wait_notifications(heads, 1)
        await admin.set(stall=True)
        frozen = int(await http.request("eth_blockNumber"), 16)
        seen = len(ws.notifications(heads))
        await until(lambda: clock_head() >= frozen + 4, what="the clock moves 4 blocks on")
        assert int(await http.request("eth_blockNumber"), 16) == frozen
        assert len(ws.notifications(heads)) <= seen + 1  # at most one head already on its way
        await admin.set(stall=False)
        now = int(await http.request("eth_blockNumber"), 16)
        assert now >= frozen + 4 and abs(now - clock_head()) <= 1
        await ws.wait_notifications(heads, seen + 4)  # the missed heads are notified, then new ones


async def test_lag_reports_a_head_n_blocks_behind_and_syncing(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    async with HttpClient(node.url("http")) as http:
        await admin.set(lag_blocks=7)
        before = clock_head()
        reported = int(await http.request("eth_blockNumber"), 16)
        after = clock_head()
        assert before - 7 <= reported <= after - 7
        syncing = await http.request("eth_syncing")
        assert int(syncing["highestBlock"], 16) - int(syncing["currentBlock"], 16) == 7
        assert await http.request("eth_getBlockByNumber", [hex(after), False]) is None  # not there yet
        await admin.set(lag_blocks=0)
        before = clock_head()
        reported = int(await http.request("eth_blockNumber"), 16)
        assert before <= reported <= clock_head()
        assert await http.request("eth_syncing") is False


async def test_delay_holds_one_method_without_holding_the_others(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    async with await WsClient.connect(node.url("ws"), "geth") as ws:
        await admin.set(delay={"eth_chainId": 0.6})
        started = time.monotonic()
        slow = asyncio.create_task(ws.request("eth_chainId"))
        await ws.wait_for(lambda: any(f.kind == "request" for f in ws.trace), what="chainId sent")
        assert await ws.request("eth_blockNumber")
        assert not slow.done()  # the delayed answer is still held
        assert await slow == "0x539"
        assert time.monotonic() - started >= 0.6
        await admin.set(delay={"eth_chainId": None})
        assert (await admin.get())["delay"] == {}
        delayed = sum(1 for r in node.logs() if r["event"] == "fault.delay")
        assert delayed == 1  # the one held eth_chainId
        chain_id, _head = await asyncio.gather(ws.request("eth_chainId"), ws.request("eth_blockNumber"))
        assert chain_id == "0x539"
        # the delay is gone: neither answer was held (the node's own record, not the order of the answers)
        assert sum(1 for r in node.logs() if r["event"] == "fault.delay") == delayed


async def test_fail_answers_errors_for_a_fraction_and_stops_when_removed(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    async with HttpClient(node.url("http")) as http:
        rule = {"code": -32005, "message": "limit exceeded", "fraction": 0.5}
        await admin.set(fail={"eth_blockNumber": rule})
        outcomes = []
        for _ in range(8):
            try:
                await http.request("eth_blockNumber")
                outcomes.append("ok")
            except RpcResponseError as err:
                assert (err.code, err.message) == (-32005, "limit exceeded")
                outcomes.append("fail")
        assert outcomes == ["ok", "fail"] * 4
        assert await http.request("eth_chainId") == "0x539"  # other methods unaffected
        await admin.set(fail={"*": {"code": -32603, "message": "down"}})
        with pytest.raises(RpcResponseError):
            await http.request("eth_chainId")
        await admin.set(fail=None)
        for _ in range(4):
            await http.request("eth_blockNumber")
            await http.request("eth_chainId")


async def test_slow_handshake_holds_only_the_next_k_upgrades(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    await admin.set(slow_handshake={"count": 1, "seconds": 1.0})
    started = time.monotonic()
    held = asyncio.create_task(WsClient.connect(node.url("ws"), "geth", name="held"))
    await until(lambda: not held.done() and any(r["event"] == "fault.slow_handshake" for r in node.logs()),
                what="the first upgrade is held")
    assert (await admin.get())["slow_handshake"] is None  # the one slow handshake is taken
    async with await WsClient.connect(node.url("ws"), "geth", name="quick") as quick:
        assert await quick.request("eth_chainId") == "0x539"
        assert not held.done()  # the quick one got through while the first is still held
    async with await held as client:
        assert time.monotonic() - started >= 1.0
        assert await client.request("eth_chainId") == "0x539"


async def test_heartbeat_notifications_at_the_cadence_until_turned_off(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    async with await WsClient.connect(node.url("ws"), "strict") as ws:

        def beats() -> list[dict]:
            return [f.message["params"] for f in ws.trace if f.method == "elnode_heartbeat"]

        await admin.set(heartbeat_interval=0.05)
        await ws.wait_for(lambda: len(beats()) >= 3, what="3 heartbeats")
        seqs = [b["seq"] for b in beats()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert beats()[0]["node"] == "el1"
        await admin.set(heartbeat_interval=None)
        await ws.request("eth_chainId")  # anything queued before the switch has arrived by now
        count = len(beats())
        heads = await ws.subscribe("newHeads")
        await ws.wait_notifications(heads, 3)  # ≥ 0.4 s: 8 heartbeats if they were still on
        assert len(beats()) == count
        assert not ws.protocol_errors  # a heartbeat is a notification, not a response


@pytest.mark.parametrize(("mode", "code"), [("close", 1001), ("abort", 1006)])
async def test_drop_websockets_closes_every_connection(node: Service, mode: str, code: int) -> None:
    admin = AdminClient(node.url("http"))
    first = await WsClient.connect(node.url("ws"), "geth", name="a")
    second = await WsClient.connect(node.url("ws"), "geth", name="b")
    try:
        await first.subscribe("newHeads")
        assert await admin.drop_websockets(mode) == 2
        await first.wait_for(lambda: first.closed, what="a closed")
        await second.wait_for(lambda: second.closed, what="b closed")
        assert (first.close_code, second.close_code) == (code, code)
    finally:
        await first.close()
        await second.close()
    async with await WsClient.connect(node.url("ws"), "geth") as again:
        assert await again.request("eth_chainId") == "0x539"
    assert await admin.drop_websockets() == 0


async def test_reset_and_bad_patches(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    off = await admin.get()
    await admin.set(stall=True, lag_blocks=2, delay={"*": 0.01}, heartbeat_interval=1,
                    fail={"eth_call": {"code": -1, "message": "x"}},
                    slow_handshake={"count": 3, "seconds": 1})
    with pytest.raises(AdminError, match="lag_blocks"):
        await admin.set(lag_blocks=-3)
    assert (await admin.get())["lag_blocks"] == 2
    assert await admin.reset() == off
    assert await admin.get() == off


async def test_sync_admin_client(node: Service) -> None:
    admin = AdminClient(node.url("http"))
    knobs = await asyncio.to_thread(admin.set_sync, lag_blocks=1)
    assert knobs["lag_blocks"] == 1 == (await asyncio.to_thread(admin.get_sync))["lag_blocks"]
    assert (await asyncio.to_thread(admin.reset_sync))["lag_blocks"] == 0
    assert await asyncio.to_thread(admin.drop_websockets_sync) == 0
    with pytest.raises(AdminError):
        await asyncio.to_thread(admin.set_sync, bogus=True)


async def test_knob_changes_are_logged(start_node: Callable[..., Service]) -> None:
    node = start_node()
    admin = AdminClient(node.url("http"))
    await admin.set(lag_blocks=3)
    await admin.reset()
    events = [r["event"] for r in node.logs()]
    assert "fault.set" in events and "fault.reset" in events
