"""Two nodes of one chain agree on the head; a restarted node continues without regression."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from workbook.rpcclient import HttpClient, WsClient
from workbook.service import Service


async def _head(client: HttpClient) -> tuple[int, str]:
    block = await client.request("eth_getBlockByNumber", ["latest", False])
    return int(block["number"], 16), block["hash"]


async def test_nodes_started_at_different_moments_agree(start_node: Callable[..., Service]) -> None:
    el1 = start_node("el1")
    async with HttpClient(el1.url("http")) as c1:
        first = int(await c1.request("eth_blockNumber"), 16)
        async with await WsClient.connect(el1.url("ws"), "geth") as ws:  # el2 starts after el1's head moved
            await ws.wait_notifications(await ws.subscribe("newHeads"), 1)
        el2 = start_node("el2")
        async with HttpClient(el2.url("http")) as c2:
            agreed = 0
            async with asyncio.timeout(10):
                while agreed < 3:  # the same head at the same moment, up to a block boundary in between
                    (n1, h1), (n2, h2) = await asyncio.gather(_head(c1), _head(c2))
                    assert abs(n1 - n2) <= 1
                    if n1 == n2:
                        assert h1 == h2
                        agreed += 1
            block = await c1.request("eth_getBlockByNumber", [hex(first), True])
            assert await c2.request("eth_getBlockByNumber", [hex(first), True]) == block


async def test_restart_continues_where_the_clock_says(node: Service) -> None:
    async with HttpClient(node.url("http")) as client:
        before, before_hash = await _head(client)
    await node.arestart()
    async with HttpClient(node.url("http")) as client:
        after, _ = await _head(client)
        assert after >= before
        assert (await client.request("eth_getBlockByNumber", [hex(before), False]))["hash"] == before_hash
