"""workbook.rpcclient: id pairing of both client kinds, frame classification, HTTP calls and batches.

A scripted WebSocket server (in this process, port 0) sends the unsolicited responses and unknown
notifications that an upstream move produces; elnode provides real subscriptions.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve
from workbook import History, checkers
from workbook.rpcclient import (
    NOTIFICATION_KNOWN_SUB,
    NOTIFICATION_UNKNOWN_SUB,
    RESPONSE_TO_PENDING,
    UNSOLICITED_RESPONSE,
    ConnectionLost,
    HttpClient,
    RequestTimeout,
    RpcResponseError,
    WsClient,
    message_rows,
    trace_records,
)
from workbook.run import Run
from workbook.service import http_health


async def _scripted(conn: ServerConnection) -> None:
    """Answers every request with its method name; ``extra_after``/``extra_before`` also send params[0]'s
    messages after/before the answer; ``fail`` answers an error; ``close`` closes the connection."""
    async for text in conn:
        request = json.loads(text)
        method, params = request.get("method"), request.get("params") or []
        if method == "close":
            await conn.close(1011, "scripted")
            return
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id"), "result": method}
        if method == "fail":
            answer = {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": -32000, "message": "nope"}}
        if method == "silent":
            continue
        if method == "eth_subscribe":  # the answer, and at once a notification under the new id
            await conn.send(json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": "0xsub1"}))
            await conn.send(json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                                        "params": {"subscription": "0xsub1", "result": "first"}}))
            continue
        if method == "extra_before":
            for extra in params[0]:
                await conn.send(json.dumps(extra))
        await conn.send(json.dumps(answer))
        if method == "extra_after":
            for extra in params[0]:
                await conn.send(json.dumps(extra))


@pytest.fixture
async def scripted_url() -> AsyncIterator[str]:
    async with serve(_scripted, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


def _response(req_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


async def test_requests_are_answered_and_recorded(scripted_url: str) -> None:
    async with await WsClient.connect(scripted_url, "geth", name="c") as client:
        assert await client.request("eth_blockNumber") == "eth_blockNumber"
        assert await client.request("eth_chainId", id="mine") == "eth_chainId"
        with pytest.raises(RpcResponseError) as info:
            await client.request("fail")
        assert info.value.code == -32000
        kinds = [(f.direction, f.kind, f.id) for f in client.trace]
        assert kinds == [("sent", "request", 1), ("received", RESPONSE_TO_PENDING, 1),
                         ("sent", "request", "mine"), ("received", RESPONSE_TO_PENDING, "mine"),
                         ("sent", "request", 2), ("received", RESPONSE_TO_PENDING, 2)]
        assert all(a.mono <= b.mono for a, b in zip(client.trace, client.trace[1:], strict=False))


async def test_with_a_history_each_request_is_one_operation_the_client_classified(scripted_url: str) -> None:
    history = History()
    async with await WsClient.connect(scripted_url, "strict", name="c", history=history) as client:
        await client.request("eth_blockNumber")
        with pytest.raises(RpcResponseError):
            await client.request("fail")
        with pytest.raises(RequestTimeout):
            await client.request("silent", timeout=0.2)
    rows = history.operations()
    assert [(r["process"], r["f"], r["key"], r["type"]) for r in rows] == [
        ("c", "eth_blockNumber", 1, "ok"), ("c", "fail", 2, "fail"), ("c", "silent", 3, "info")]
    assert rows[0]["result"] == "eth_blockNumber" and rows[1]["result"] == -32000
    assert checkers.exactly_one_response(history, [client.trace])["unanswered"] == 1


async def test_geth_client_drops_unsolicited_responses_and_unknown_notifications(scripted_url: str) -> None:
    extras = [_response(1, "0xreplayed"),
              {"jsonrpc": "2.0", "method": "eth_subscription",
               "params": {"subscription": "0x" + "ab" * 16, "result": {"number": "0x1"}}}]
    async with await WsClient.connect(scripted_url, "geth") as client:
        assert await client.request("extra_after", [extras]) == "extra_after"
        await client.wait_for(lambda: len(client.trace) == 4, what="both extras received")
        assert [f.kind for f in client.trace[2:]] == [UNSOLICITED_RESPONSE, NOTIFICATION_UNKNOWN_SUB]
        assert await client.request("eth_blockNumber") == "eth_blockNumber"  # still in sync
        assert not client.desynchronised and not client.protocol_errors


async def test_geth_client_takes_a_colliding_id_as_its_answer(scripted_url: str) -> None:
    """rpc-03's mechanism: a replayed answer carrying the id of a pending request is taken for its answer."""
    async with await WsClient.connect(scripted_url, "geth") as client:
        answer = await client.request("extra_before", [[_response(100, "0xsubscription")]], id=100)
        assert answer == "0xsubscription"
        await client.wait_for(lambda: len(client.trace) == 3, what="the real answer")
        assert client.trace[-1].kind == UNSOLICITED_RESPONSE


async def test_strict_client_desynchronises_on_an_unsolicited_response(scripted_url: str) -> None:
    async with await WsClient.connect(scripted_url, "strict") as client:
        assert await client.request("extra_after", [[_response(1, "0xreplayed")]]) == "extra_after"
        await client.wait_for(lambda: len(client.trace) == 3, what="the unsolicited answer")
        assert client.trace[-1].kind == UNSOLICITED_RESPONSE
        for _ in range(3):  # from now on every request times out: its answer is paired one off
            with pytest.raises(RequestTimeout, match="desynchronised"):
                await client.request("eth_blockNumber", timeout=0.3)
        assert client.desynchronised and len(client.protocol_errors) >= 3
        assert len(client.frames(UNSOLICITED_RESPONSE)) >= 1
        rows = message_rows(client, peer="proxy")
        assert [r["src"] for r in rows[:2]] == ["strict-client", "proxy"]
        assert rows[2]["highlight"] and rows[2]["label"] == "result 0xreplayed id=1"
        mismatches = [f for f in client.frames(direction="event") if "mismatch" in (f.note or "")]
        assert len(mismatches) >= 3
        assert sum(r["highlight"] for r in rows) >= 4  # the stray answer and every mismatch
    async with await WsClient.connect(scripted_url, "strict") as fresh:  # a fresh connection works
        assert await fresh.request("eth_blockNumber") == "eth_blockNumber"


async def test_strict_client_takes_a_stray_answer_with_a_reused_id(scripted_url: str) -> None:
    async with await WsClient.connect(scripted_url, "strict") as client:
        await client.request("extra_after", [[_response(100, "0xsubscription")]], id=100)
        await client.wait_for(lambda: len(client.trace) == 3, what="the unsolicited answer")
        assert await client.request("eth_blockNumber", id=100) == "0xsubscription"


@pytest.mark.parametrize("kind", ["strict", "geth"])
async def test_a_notification_right_behind_the_subscribe_answer_is_known(scripted_url: str,
                                                                          kind: str) -> None:
    async with await WsClient.connect(scripted_url, kind) as client:  # type: ignore[arg-type]
        sub = await client.subscribe("newHeads")
        assert await client.wait_notifications(sub, 1) == ["first"]
        assert client.trace[-1].kind == NOTIFICATION_KNOWN_SUB
        assert client.notifications("0xunknown") == [] and "0xunknown" not in client.subscriptions


async def test_a_closed_connection_fails_pending_requests(scripted_url: str) -> None:
    async with await WsClient.connect(scripted_url, "geth") as client:
        with pytest.raises(ConnectionLost):
            await client.request("close")
        assert client.closed and client.close_code == 1011
        assert client.trace[-1].direction == "event"
        with pytest.raises(ConnectionLost):
            await client.request("eth_chainId")


async def test_subscriptions_on_elnode_and_http_client(run: Run) -> None:
    node = run.start("el1", ["elnode", "--listen", "127.0.0.1:0", "--name", "el1", "--block-time", "0.2"],
                     health=http_health("/health"))
    async with await WsClient.connect(node.url("ws"), "strict", binary=True) as ws, \
            HttpClient(node.url("http")) as http:
        sub = await ws.subscribe("newHeads")
        heads = await ws.wait_notifications(sub, 2)
        assert int(heads[1]["number"], 16) == int(heads[0]["number"], 16) + 1
        assert any(f.kind == NOTIFICATION_KNOWN_SUB for f in ws.trace)
        assert await ws.unsubscribe(sub) is True
        assert await http.request("eth_chainId") == "0x539"
        answers = await http.batch([("eth_chainId", None), ("eth_nope", None)])
        assert answers[0]["result"] == "0x539" and answers[1]["error"]["code"] == -32601
        with pytest.raises(RpcResponseError):
            await http.request("eth_nope")
        records = trace_records(ws, http)
        assert {r["client"] for r in records} == {"strict-client", "http-client"}
        assert records == sorted(records, key=lambda r: r["mono"])
    assert ws.closed


async def test_connect_refuses_an_unknown_kind(scripted_url: str) -> None:
    with pytest.raises(ValueError):
        await WsClient.connect(scripted_url, "lenient")  # type: ignore[arg-type]
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises((OSError, websockets.InvalidHandshake)):
            await WsClient.connect(f"ws://127.0.0.1:{port}/", "geth", open_timeout=2)
