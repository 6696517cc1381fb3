"""elnode over WebSocket with the plain ``websockets`` client: subscriptions, frames, pings, limits."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from elnode.chain import TRANSFER_TOPIC
from workbook.service import Service

SUB_ID = re.compile(r"0x[0-9a-f]{32}")


class Conn:
    """A plain websockets connection that answers requests by id and files notifications by subscription."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.answers: dict[Any, dict[str, Any]] = {}
        self.notes: dict[str, list[Any]] = {}
        self.next_id = 0

    async def _pump_until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not done():
                message = json.loads(await self.ws.recv())
                for item in message if isinstance(message, list) else [message]:
                    if item.get("method") == "eth_subscription":
                        params = item["params"]
                        self.notes.setdefault(params["subscription"], []).append(params["result"])
                    else:
                        self.answers[item.get("id")] = item

    async def call(self, method: str, params: list[Any] | None = None, *,
                   binary: bool = False) -> dict[str, Any]:
        self.next_id += 1
        req_id = self.next_id
        text = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params or []})
        await self.ws.send(text.encode() if binary else text)
        await self._pump_until(lambda: req_id in self.answers)
        return self.answers.pop(req_id)

    async def notifications(self, sub: str, count: int) -> list[Any]:
        await self._pump_until(lambda: len(self.notes.get(sub, [])) >= count)
        return self.notes[sub]


async def test_new_heads_arrive_in_order_and_chain_together(node: Service) -> None:
    async with websockets.connect(node.url("ws")) as ws:
        conn = Conn(ws)
        sub = (await conn.call("eth_subscribe", ["newHeads"]))["result"]
        assert SUB_ID.fullmatch(sub)
        heads = await conn.notifications(sub, 4)
        numbers = [int(h["number"], 16) for h in heads]
        assert numbers == list(range(numbers[0], numbers[0] + 4))
        assert all(b["parentHash"] == a["hash"] for a, b in itertools.pairwise(heads))
        assert (await conn.call("eth_unsubscribe", [sub]))["result"] is True
        assert (await conn.call("eth_unsubscribe", [sub]))["error"]["code"] == -32000


async def test_logs_and_pending_transactions_subscriptions(node: Service) -> None:
    async with websockets.connect(node.url("ws")) as ws:
        conn = Conn(ws)
        head = int((await conn.call("eth_blockNumber"))["result"], 16)
        contract = (await conn.call("eth_getLogs", [{"fromBlock": hex(head - 20)}]))["result"][0]["address"]
        logs_sub = (await conn.call("eth_subscribe", ["logs", {"address": contract,
                                                               "topics": [TRANSFER_TOPIC]}]))["result"]
        pending_sub = (await conn.call("eth_subscribe", ["newPendingTransactions"]))["result"]
        logs = await conn.notifications(logs_sub, 2)
        assert all(log["address"] == contract and log["topics"][0] == TRANSFER_TOPIC for log in logs)
        pending = (await conn.notifications(pending_sub, 3))[0]
        mined = []
        for number in range(head, head + 1000):
            block = (await conn.call("eth_getBlockByNumber", [hex(number), False]))["result"]
            if block is None:
                break
            mined += block["transactions"]
        assert pending in mined  # a pending transaction is mined in a later block


async def test_binary_frames_batches_and_pings(node: Service) -> None:
    async with websockets.connect(node.url("ws")) as ws:
        conn = Conn(ws)
        assert (await conn.call("eth_chainId", binary=True))["result"] == "0x539"
        pong = await ws.ping(b"are you there")
        async with asyncio.timeout(5):
            await pong
        await ws.send(json.dumps([{"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
                                  {"jsonrpc": "2.0", "id": "b", "method": "eth_syncing"}]))
        await conn._pump_until(lambda: {"a", "b"} <= set(conn.answers))
        assert conn.answers["a"]["result"] == "0x539" and conn.answers["b"]["result"] is False
        await ws.send("{broken")
        await conn._pump_until(lambda: None in conn.answers)
        assert conn.answers[None]["error"]["code"] == -32700


async def test_bad_subscriptions_are_invalid_params(node: Service) -> None:
    async with websockets.connect(node.url("ws")) as ws:
        conn = Conn(ws)
        for params in ([], ["newBlocks"], ["logs", {"address": "0x12"}], ["newHeads", 1],
                       ["newPendingTransactions", "yes"], [{"kind": "newHeads"}]):
            assert (await conn.call("eth_subscribe", params))["error"]["code"] == -32602, params


async def test_syncing_subscription_reports_lag_start_and_end(node: Service) -> None:
    from elnode.admin import AdminClient

    admin = AdminClient(node.url("http"))
    async with websockets.connect(node.url("ws")) as ws:
        conn = Conn(ws)
        sub = (await conn.call("eth_subscribe", ["syncing"]))["result"]
        await admin.set(lag_blocks=5)
        started = (await conn.notifications(sub, 1))[0]
        assert started["syncing"] is True
        assert int(started["status"]["highestBlock"], 16) - int(started["status"]["currentBlock"], 16) == 5
        await admin.reset()
        assert (await conn.notifications(sub, 2))[1] is False


async def test_oversize_message_closes_with_1009(start_node: Callable[..., Service]) -> None:
    node = start_node(extra=("--max-message-size", "4096"))
    async with websockets.connect(node.url("ws")) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x" * 5000}))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009
    async with websockets.connect(node.url("ws")) as ws:  # the node itself is fine
        assert Conn(ws) and (await Conn(ws).call("eth_chainId"))["result"] == "0x539"
