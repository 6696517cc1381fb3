"""elnode over HTTP: methods, batches, the spec's error codes, limits, health, metrics, admin presence."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from conftest import CHAIN_ID
from elnode.chain import TRANSFER_TOPIC
from prometheus_client.parser import text_string_to_metric_families
from workbook.rpcclient import HttpClient, RpcResponseError
from workbook.service import Service


async def test_methods_answer_like_a_dev_node(node: Service) -> None:
    async with HttpClient(node.url("http")) as client:
        assert await client.request("eth_chainId") == hex(CHAIN_ID)
        assert await client.request("net_version") == str(CHAIN_ID)
        assert (await client.request("web3_clientVersion")).startswith("elnode/")
        assert await client.request("eth_syncing") is False
        assert int(await client.request("eth_gasPrice"), 16) > 10**9
        head = int(await client.request("eth_blockNumber"), 16)
        block = await client.request("eth_getBlockByNumber", [hex(head), False])
        assert int(block["number"], 16) == head
        assert all(isinstance(tx, str) for tx in block["transactions"])
        full = await client.request("eth_getBlockByNumber", [hex(head), True])
        assert [tx["hash"] for tx in full["transactions"]] == block["transactions"]
        assert await client.request("eth_getBlockByHash", [block["hash"], False]) == block
        assert await client.request("eth_getBlockByNumber", [hex(head + 10_000), False]) is None
        assert (await client.request("eth_getBlockByNumber", ["earliest", False]))["number"] == "0x0"
        latest = int((await client.request("eth_getBlockByNumber", ["latest", False]))["number"], 16)
        assert latest >= head
        assert await client.request("eth_getBlockByHash", ["0x" + "ab" * 32, False]) is None


async def test_get_logs_filters_by_range_address_and_topics(node: Service) -> None:
    async with HttpClient(node.url("http")) as client:
        head = int(await client.request("eth_blockNumber"), 16)
        window = {"fromBlock": hex(head - 40), "toBlock": hex(head)}
        every = await client.request("eth_getLogs", [window])
        assert every and all(head - 40 <= int(log["blockNumber"], 16) <= head for log in every)
        address = every[0]["address"]
        mine = await client.request("eth_getLogs", [{**window, "address": address}])
        assert mine == [log for log in every if log["address"] == address]
        transfers = await client.request("eth_getLogs", [{**window, "topics": [TRANSFER_TOPIC]}])
        assert transfers == [log for log in every if log["topics"][0] == TRANSFER_TOPIC]
        block_hash = every[0]["blockHash"]
        assert await client.request("eth_getLogs", [{"blockHash": block_hash}]) == [
            log for log in every if log["blockHash"] == block_hash]
        try:
            await client.request("eth_getLogs", [{"fromBlock": "0x0", "toBlock": hex(head)}])
            raise AssertionError("an unbounded range must be refused")
        except RpcResponseError as err:
            assert err.code == -32602


async def test_batches_answer_every_request_by_id(node: Service) -> None:
    async with HttpClient(node.url("http")) as client:
        answers = await client.batch([("eth_chainId", None), ("eth_blockNumber", None), ("nope_nope", None),
                                      ("eth_getBlockByNumber", ["latest"])])
        assert answers[0]["result"] == hex(CHAIN_ID)
        assert "result" in answers[1]
        assert answers[2]["error"]["code"] == -32601
        assert "number" in answers[3]["result"]
        status, mixed = await client.post([{"jsonrpc": "2.0", "method": "eth_chainId"}, 7,
                                           {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"}])
        assert status == 200
        assert [(m["id"], "error" in m) for m in mixed] == [(None, True), ("a", False)]
        assert mixed[0]["error"]["code"] == -32600
        status, empty = await client.post([])
        assert empty["error"]["code"] == -32600
        status, only_notifications = await client.post([{"jsonrpc": "2.0", "method": "eth_chainId"}])
        assert (status, only_notifications) == (200, None)


async def test_error_codes_follow_the_spec(node: Service) -> None:
    async with HttpClient(node.url("http")) as client:
        cases = [
            (b"{not json", -32700),
            (b"\xc3\x28", -32700),
            ({"jsonrpc": "2.0", "id": 1}, -32600),
            ({"jsonrpc": "2.0", "id": 1, "method": "eth_nothing"}, -32601),
            ({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}, -32601),
            ({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["0xz", False]}, -32602),
            ({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": {"a": 1}}, -32602),
            ({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": [1]}, -32602),
            ({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{"topics": [5]}]}, -32602),
        ]
        for body, code in cases:
            status, answer = await client.post(body)
            assert status == 200 and answer["error"]["code"] == code, (body, answer)


async def test_oversize_bodies_are_refused_with_413(start_node: Callable[..., Service]) -> None:
    node = start_node(extra=("--max-message-size", "4096"))
    async with HttpClient(node.url("http")) as client:
        status, answer = await client.post({"jsonrpc": "2.0", "id": 1, "method": "x" * 5000})
        assert status == 413 and answer["error"]["code"] == -32600
        assert await client.request("eth_chainId") == hex(CHAIN_ID)


async def test_health_metrics_and_no_admin_without_fault_injection(
        start_node: Callable[..., Service]) -> None:
    node = start_node(faults=False)
    base = node.url("http")
    async with HttpClient(base) as client:
        await client.request("eth_chainId")
        await client.post(b"garbage")
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "health") as response:
            assert response.status == 200 and (await response.json())["name"] == "el1"
        async with session.get(base + "metrics") as response:
            families = {f.name: f for f in text_string_to_metric_families(await response.text())}
        samples = {(s.labels.get("method"), s.labels.get("outcome")): s.value
                   for s in families["elnode_requests"].samples if s.name == "elnode_requests_total"}
        assert samples[("eth_chainId", "ok")] == 1
        assert samples[("other", "parse_error")] == 1
        for path in ("admin/faults", "admin/faults/reset", "admin/drop-websockets"):
            async with session.post(base + path, json={}) as response:
                assert response.status == 404, path
        async with session.get(base) as response:  # GET / without an upgrade
            assert response.status == 400
