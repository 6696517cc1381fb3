"""Bad input never crashes elnode: thousands of malformed bodies and frames at ONE started node.

Each example is sent as an HTTP body and as a WebSocket frame (text or binary); the answer is checked
against the JSON-RPC 2.0 spec (an oracle written from the spec, with Python's own json as the parser),
and a probe request after every frame shows the connection and the node are still answering.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from elnode.methods import METHODS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect
from workbook.service import Service

MAX_SIZE = 65_536
MAX_DEPTH = 128
NO_ANSWER = object()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)
ids = st.one_of(st.integers(), st.integers(min_value=10**30, max_value=10**300), st.text(max_size=20),
                st.none(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
methods = st.one_of(st.sampled_from([*METHODS, "eth_subscribe", "eth_unsubscribe", "eth_call", ""]),
                    st.text(max_size=30), st.integers(), st.none())
params = st.one_of(st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=5), json_values,
                                                                      max_size=3),
                   st.integers(), st.text(max_size=10), st.none(),
                   st.just(["latest", False]), st.just([{"fromBlock": "latest", "topics": [None]}]))


@st.composite
def request_like(draw: st.DrawFn) -> dict[str, Any]:
    """A request object with every member possibly missing or of the wrong type."""
    obj: dict[str, Any] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        obj["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2, None]))
    if draw(st.integers(0, 9)):
        obj["method"] = draw(methods)
    if draw(st.booleans()):
        obj["params"] = draw(params)
    if draw(st.integers(0, 4)):
        obj["id"] = draw(ids)
    return obj


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    st.binary(max_size=64),  # garbage, mostly invalid UTF-8
    st.text(max_size=64).map(lambda t: t.encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    request_like().map(lambda r: json.dumps(r).encode()),
    st.lists(st.one_of(request_like(), json_values), max_size=12).map(lambda b: json.dumps(b).encode()),
    st.tuples(st.integers(100, 20_000), st.sampled_from(["list", "dict"])).map(lambda t: _nested(*t)),
    st.integers(4301, 6000).map(lambda n: b'{"jsonrpc":"2.0","method":"eth_chainId","id":' + b"7" * n + b"}"),
    st.sampled_from([b"NaN", b'{"jsonrpc":"2.0","id":Infinity,"method":"eth_chainId"}', b"", b" ", b"[]",
                     b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}\xff', b'"\\ud800"',
                     b'[{"jsonrpc":"2.0","method":"eth_chainId"}]']),
    st.integers(MAX_SIZE + 1, MAX_SIZE + 5000).map(lambda n: b'{"x":"' + b"a" * n + b'"}'),
)


# -- the oracle: what the spec says the answer must be ------------------------------------------------------

def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def _reject(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _parse(body: bytes) -> tuple[bool, Any]:
    if body.count(b"[") + body.count(b"{") > 4 * MAX_DEPTH and (b"[" * (MAX_DEPTH + 1) in body
                                                                  or b'{"a":' * (MAX_DEPTH + 1) in body):
        return False, None  # deeper than the node accepts (and than this oracle should recurse into)
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject)
    except (ValueError, RecursionError):
        return False, None
    return (_depth(value) <= MAX_DEPTH), value


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, int | str)


def _expect_one(obj: Any, transport: str) -> Any:
    """NO_ANSWER, or (id, allowed codes or None for "a result or -32602")."""
    if not isinstance(obj, dict):
        return (None, {-32600})
    echo = obj.get("id") if _valid_id(obj.get("id")) else None
    if obj.get("jsonrpc") != "2.0" or ("id" in obj and not _valid_id(obj["id"])):
        return (echo, {-32600})
    if not isinstance(obj.get("method"), str) or not obj["method"]:
        return (echo, {-32600})
    if "params" in obj and obj["params"] is not None and not isinstance(obj["params"], list | dict):
        return (echo, {-32600})
    if "id" not in obj:
        return NO_ANSWER
    known = set(METHODS) | ({"eth_subscribe", "eth_unsubscribe"} if transport == "ws" else set())
    if obj["method"] not in known:
        return (echo, {-32601})
    return (echo, None)


def check_answer(body: bytes, answer: Any, transport: str) -> None:
    ok, value = _parse(body)
    if not ok:
        assert isinstance(answer, dict) and answer["error"]["code"] == -32700 and answer["id"] is None, answer
        return
    if isinstance(value, list):
        if not value or len(value) > 1000:
            assert answer["error"]["code"] == -32600, answer
            return
        expected = [e for e in (_expect_one(v, transport) for v in value) if e is not NO_ANSWER]
        if not expected:
            assert answer is NO_ANSWER, answer
            return
        assert isinstance(answer, list) and len(answer) == len(expected), (expected, answer)
        for (req_id, codes), got in zip(expected, answer, strict=True):
            _check_single(req_id, codes, got)
        return
    expected = _expect_one(value, transport)
    if expected is NO_ANSWER:
        assert answer is NO_ANSWER, answer
    else:
        _check_single(*expected, answer)


def _check_single(req_id: Any, codes: set[int] | None, got: Any) -> None:
    assert isinstance(got, dict) and got.get("jsonrpc") == "2.0", got
    assert got["id"] == req_id, (req_id, got)
    if codes is None:
        assert "result" in got or got["error"]["code"] in (-32602, -32000), got
    else:
        assert "error" in got and got["error"]["code"] in codes, (codes, got)


# -- blocking clients, one of each, reused across examples --------------------------------------------------

class Clients:
    def __init__(self, node: Service) -> None:
        self.node = node
        self.http: http.client.HTTPConnection | None = None
        self.ws: ClientConnection | None = None
        self._ws_stack = contextlib.ExitStack()
        self.probes = itertools.count()

    def post(self, body: bytes) -> tuple[int, Any]:
        for attempt in range(2):
            if self.http is None:
                self.http = http.client.HTTPConnection(urlsplit(self.node.url("http")).netloc, timeout=10)
            try:
                self.http.request("POST", "/", body, {"Content-Type": "application/json"})
                response = self.http.getresponse()
                data = response.read()
                if response.will_close:
                    self.http.close()
                    self.http = None
                return response.status, (json.loads(data) if data else NO_ANSWER)
            except (ConnectionError, http.client.HTTPException):
                self.http.close()
                self.http = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def frame(self, body: bytes, binary: bool) -> tuple[Any, int | None]:
        """Send one frame, then a probe; returns (the answer before the probe's, or NO_ANSWER; close code)."""
        if self.ws is None:
            self._ws_stack = contextlib.ExitStack()
            self.ws = self._ws_stack.enter_context(
                connect(self.node.url("ws"), max_size=None, open_timeout=10))
        if binary:
            self.ws.send(body)
        else:
            try:
                self.ws.send(body.decode("utf-8"))
            except UnicodeDecodeError:
                self.ws.send(body)
        probe = f"probe-{next(self.probes)}"
        try:
            self.ws.send(json.dumps({"jsonrpc": "2.0", "id": probe, "method": "eth_chainId"}))
            answers = []
            while True:
                message = json.loads(self.ws.recv(timeout=10))
                if isinstance(message, dict) and message.get("method") == "eth_subscription":
                    continue
                if isinstance(message, dict) and message.get("id") == probe:
                    assert message["result"] == "0x539"
                    break
                answers.append(message)
        except Exception:
            code = self.ws.close_code
            if code is None:
                raise
            self._ws_stack.close()
            self.ws = None
            return NO_ANSWER, code
        assert len(answers) <= 1, answers
        return (answers[0] if answers else NO_ANSWER), None

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        self._ws_stack.close()


@pytest.fixture
def clients(start_node: Callable[..., Service]) -> Iterator[Clients]:
    c = Clients(start_node("fuzz", extra=("--max-message-size", str(MAX_SIZE), "--no-request-log")))
    try:
        yield c
    finally:
        c.close()


@settings(max_examples=1000, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(body=bodies, binary=st.booleans())
def test_malformed_input_is_answered_with_the_right_codes(clients: Clients, body: bytes,
                                                          binary: bool) -> None:
    status, answer = clients.post(body)
    if len(body) > MAX_SIZE:
        assert status == 413 and answer["error"]["code"] == -32600
    else:
        assert status == 200
        check_answer(body, answer, "http")
    answer, close_code = clients.frame(body, binary)
    if len(body) > MAX_SIZE:  # the node closes with 1009; unread bytes may turn that into a reset
        assert close_code in (1009, 1006)
    else:
        assert close_code is None
        check_answer(body, answer, "ws")


def test_the_node_survived_and_logged_no_internal_error(clients: Clients) -> None:
    too_many = json.dumps([{"jsonrpc": "2.0"}] * 1001).encode()
    for body in (b"[" * 50_000, b"\xff" * 100, b"9" * 10_000, too_many):
        status, answer = clients.post(body)
        assert status == 200 and answer["error"]["code"] in (-32700, -32600)
    status, answer = clients.post(b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}')
    assert answer["result"] == "0x539"
    assert clients.node.alive
    assert not [r for r in clients.node.logs() if r["level"] == "error"]
    assert "Traceback" not in clients.node.output()
