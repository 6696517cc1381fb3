"""elnode with web3.py 8's ``AsyncWeb3(WebSocketProvider)``: the node must look like a real one to it."""

from __future__ import annotations

import asyncio

from elnode.chain import TRANSFER_TOPIC
from web3 import AsyncWeb3, WebSocketProvider
from workbook.service import Service


async def test_web3_reads_blocks_and_follows_new_heads_and_logs(node: Service) -> None:
    async with AsyncWeb3(WebSocketProvider(node.url("ws"))) as w3:
        assert await w3.eth.chain_id == 1337
        number = await w3.eth.block_number
        block = await w3.eth.get_block(number, full_transactions=True)
        assert block["number"] == number
        assert block["transactions"][0]["blockHash"] == block["hash"]
        assert (await w3.eth.get_block(block["hash"]))["number"] == number
        heads_id = await w3.eth.subscribe("newHeads")
        logs_id = await w3.eth.subscribe("logs", {"topics": [TRANSFER_TOPIC]})
        heads: list[int] = []
        logs = []
        async with asyncio.timeout(15):
            async for message in w3.socket.process_subscriptions():
                if message["subscription"] == heads_id:
                    heads.append(message["result"]["number"])
                    assert message["result"]["parentHash"]
                elif message["subscription"] == logs_id:
                    logs.append(message["result"])
                if len(heads) >= 3 and logs:
                    break
        assert heads == list(range(heads[0], heads[0] + len(heads)))
        assert all(log["topics"][0].to_0x_hex() == TRANSFER_TOPIC for log in logs)
        assert await w3.eth.unsubscribe(heads_id) is True
        assert await w3.eth.block_number >= heads[-1]
