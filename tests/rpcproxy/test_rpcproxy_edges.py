"""HTTP routing and WebSocket edges: batches, limits, deny-list, pass-through, retries, frames, keep-alive,
and fuzzed bodies and frames that must never crash the proxy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from rpcproxy.httpproxy import forwardable
from rpcproxy_support import metric, start_stack, wait_until
from workbook.rpcclient import HttpClient, RpcResponseError, WsClient
from workbook.run import Run


async def _post(url: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers={"Content-Type": "application/json", **(headers or {})}) as resp,
    ):
        body = await resp.read()
        return resp.status, json.loads(body) if body else None


async def test_http_batches_limits_deny_list_and_pass_through(run: Run) -> None:
    stack = await start_stack(run, body_limit=4096, batch_limit=5)
    url = stack.proxy_http_url
    status, answer = await _post(url, b'{"jsonrpc":"2.0","id":7,"method":"eth_chainId","params":[]}')
    assert (status, answer["id"], answer["result"]) == (200, 7, "0x539")
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": 2, "method": "admin_peers"},
        {"jsonrpc": "2.0", "id": 3, "method": 42},
        {"jsonrpc": "2.0", "id": 4, "method": "eth_chainId"},
    ]
    status, answers = await _post(url, json.dumps(batch).encode())
    by_id = {a["id"]: a for a in answers}
    assert status == 200 and sorted(by_id) == [1, 2, 3, 4] and len(answers) == 4
    assert by_id[2]["error"]["code"] == -32601 and by_id[3]["error"]["code"] == -32600
    assert by_id[4]["result"] == "0x539" and int(by_id[1]["result"], 16) > 0
    status, answer = await _post(url, json.dumps(batch * 2).encode())
    assert answer["error"]["code"] == -32005  # over batch_limit
    assert (await _post(url, b"[]"))[1]["error"]["code"] == -32600
    assert (await _post(url, b'{"jsonrpc":"2.0","id":1,"method":"debug_traceBlock"}'))[1]["error"][
        "code"
    ] == -32601
    status, answer = await _post(
        url, b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":["' + b"x" * 5000 + b'"]}'
    )
    assert status == 413 and answer["error"]["code"] == -32005
    assert (await _post(url, b"{not json"))[1]["error"]["code"] == -32700
    assert (await _post(url, b"\xff\xfe\xfd"))[1]["error"]["code"] == -32700
    assert (await _post(url, b"[" * 2000 + b"]" * 2000))[1]["error"]["code"] == -32700  # nested too deeply
    # an upstream's error is passed through as it is
    await stack.admin("el1").set(fail={"eth_gasPrice": {"code": -32099, "message": "injected"}})
    async with HttpClient(url) as http:
        with pytest.raises(RpcResponseError) as err:
            await http.request("eth_gasPrice")
    assert (err.value.code, err.value.message) == (-32099, "injected")
    assert (
        await metric(
            stack,
            "rpcproxy_requests_total",
            transport="http",
            method="eth_gasPrice",
            upstream="el1",
            outcome="rpc_error",
        )
        == 1
    )


async def test_http_reads_are_retried_on_the_next_node_and_writes_are_not(run: Run) -> None:
    # el1 stays "healthy" (the monitor needs 1000 failures) so routing keeps trying it first
    stack = await start_stack(run, unhealthy_after=1000)
    stack.link("el1").cut()
    async with HttpClient(stack.proxy_http_url) as http:
        assert int(await http.request("eth_blockNumber"), 16) > 0  # reset by el1's link, answered by el2
        status, answer = await http.post(
            {"jsonrpc": "2.0", "id": 9, "method": "eth_sendRawTransaction", "params": ["0x00"]}
        )
    assert status == 502 and answer["id"] == 9 and answer["error"]["code"] == -32000
    assert await metric(stack, "rpcproxy_http_retries_total", from_upstream="el1") >= 1


def test_hop_by_hop_headers_are_not_forwarded() -> None:
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "1"),
            ("Keep-Alive", "5"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Host", "proxy"),
            ("Authorization", "Bearer t"),
            ("X-Request-Id", "abc"),
            ("Content-Length", "10"),
        ]
    )
    kept = forwardable(headers)
    assert dict(kept) == {"Authorization": "Bearer t", "X-Request-Id": "abc"}


async def test_websocket_frames_batches_caps_and_keepalive(run: Run) -> None:
    stack = await start_stack(run, ws_max_message_size=8192, ws_max_subscriptions=2, ws_ping_interval=1.0)
    async with aiohttp.ClientSession() as session, session.ws_connect(stack.proxy_ws_url) as raw:
        await raw.send_bytes(b"\xff\xfe")  # invalid UTF-8
        await raw.send_str("[" * 5000 + "]" * 2000)  # nested too deeply, and not even complete
        await raw.send_bytes(b'{"jsonrpc":"2.0","id":5,"method":"eth_chainId"}\xc3')
        await raw.send_str(
            json.dumps(
                [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in (1, 2, 3)]
                + [{"jsonrpc": "2.0", "method": "eth_chainId"}]
            )
        )
        received = [json.loads((await raw.receive(timeout=5)).data) for _ in range(4)]
        assert [m["error"]["code"] for m in received if isinstance(m, dict)] == [-32700] * 3
        batch_answer = next(m for m in received if isinstance(m, list))
        assert sorted(a["id"] for a in batch_answer) == [1, 2, 3]  # none for the notification
    async with await WsClient.connect(stack.proxy_ws_url, "geth", binary=True) as client:
        assert await client.request("eth_chainId") == "0x539"  # a binary frame
        await client.subscribe("newHeads")
        await client.subscribe("logs", {})
        with pytest.raises(RpcResponseError) as err:
            await client.subscribe("newPendingTransactions")
        assert err.value.code == -32005
        await client.send_raw("x" * 9000)  # over the maximum message size: the proxy closes the connection
        await client.wait_for(lambda: client.closed, what="the oversize frame closes the connection")
        assert client.close_code == 1009
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(stack.proxy_ws_url, autoping=False) as ws,
    ):
        message = await ws.receive(timeout=5)  # the proxy's keep-alive ping
        assert message.type == aiohttp.WSMsgType.PING
        await ws.pong(message.data)
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as fresh:  # still serving
        assert await fresh.request("eth_chainId") == "0x539"

    async def all_closed() -> bool:  # the proxy learns of a close asynchronously: wait on its gauge
        return (
            await metric(stack, "rpcproxy_ws_client_connections") == 0
            and await metric(stack, "rpcproxy_ws_subscriptions") == 0
        )

    await wait_until(all_closed, 5, "every session closed and its subscriptions gone")


FRAMES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ).map(json.dumps),
    st.fixed_dictionaries(
        {
            "jsonrpc": st.just("2.0"),
            "id": st.one_of(
                st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2)
            ),
            "method": st.one_of(
                st.sampled_from(["eth_chainId", "eth_subscribe", "eth_unsubscribe", "admin_x", ""]),
                st.text(max_size=10),
            ),
            "params": st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=3), st.integers()),
        }
    ).map(json.dumps),
)


def test_fuzzed_bodies_and_frames_never_crash_the_proxy(run: Run) -> None:
    loop = asyncio.new_event_loop()
    try:
        stack = loop.run_until_complete(start_stack(run))
        http_url, ws_url = stack.proxy_http_url, stack.proxy_ws_url
        http = loop.run_until_complete(_open_session())
        ws = loop.run_until_complete(http.ws_connect(ws_url))

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(frame=FRAMES)
        def one(frame: str | bytes) -> None:
            data = frame.encode() if isinstance(frame, str) else frame
            status, _answer = loop.run_until_complete(_post_with(http, http_url, data))
            assert status in (200, 204, 413, 502)
            loop.run_until_complete(ws.send_bytes(data) if isinstance(frame, bytes) else ws.send_str(frame))

        one()
        # the same connection still answers, matched by id among whatever the fuzz frames produced
        loop.run_until_complete(ws.send_str('{"jsonrpc":"2.0","id":"probe","method":"eth_chainId"}'))
        assert loop.run_until_complete(_answer_to(ws, "probe"))["result"] == "0x539"
        loop.run_until_complete(ws.close())
        loop.run_until_complete(http.close())
        assert stack.proxy.alive and loop.run_until_complete(_post_with_new(http_url))[0] == 200
    finally:
        loop.close()


async def _open_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


async def _post_with(session: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, bytes]:
    async with session.post(url, data=data) as resp:
        return resp.status, await resp.read()


async def _post_with_new(url: str) -> tuple[int, Any]:
    return await _post(url, b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}')


async def _answer_to(ws: aiohttp.ClientWebSocketResponse, req_id: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive()
            assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
            value = json.loads(message.data)
            if isinstance(value, dict) and value.get("id") == req_id:
                return value


async def test_an_upstream_answer_over_the_response_limit_is_an_error_and_not_retried(run: Run) -> None:
    stack = await start_stack(run, response_limit=1024)
    url = stack.proxy_http_url
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []} for i in range(60)]
    status, answers = await _post(url, json.dumps(batch).encode())  # about 2.4 KiB of answers
    assert status == 502 and sorted(a["id"] for a in answers) == list(range(60))
    assert {a["error"]["code"] for a in answers} == {-32005}
    assert "exceeds the limit" in answers[0]["error"]["message"]
    status, answer = await _post(url, b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}')
    assert (status, answer["result"]) == (200, "0x539")  # the refused connection was dropped, not reused
    labels = {"transport": "http", "method": "batch", "upstream": "", "outcome": "limited"}
    assert await metric(stack, "rpcproxy_requests_total", **labels) == 1
    assert await metric(stack, "rpcproxy_http_retries_total", from_upstream="el1") == 0
