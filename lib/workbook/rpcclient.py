"""JSON-RPC clients for notebooks and tests that record every frame, over WebSocket and HTTP.

Two WebSocket client kinds model the two client populations of the 2026-01-23 proxy incident:

- ``"geth"`` — pairs a response with the pending request of the same id (as go-ethereum's client
  does); a response whose id is not pending is silently dropped, and so is a notification under a
  subscription id it does not hold. After an unmapped upstream move its subscriptions go silent.
- ``"strict"`` — pairs responses with requests *in the order the requests were sent* (a FIFO of
  waiters, as simple clients over an ordered stream do) and checks each pairing. A response whose id
  is not the one expected is a protocol error: the answer is discarded as corrupt and that waiter's
  answer is lost (its caller times out). An answer that arrives when nobody waits is kept for the
  next request, which it will not match. So one unsolicited response desynchronises the connection
  for good: every later request on it times out (or, when its id collides, gets the stray answer),
  while a fresh connection works — the incident's three-hour symptom.

Every frame sent or received is appended to ``client.trace`` (the wire, below the operation history)
with monotonic and wall timestamps,
direction, parsed JSON and a classification judged by ids alone (the truth, whatever the client kind
made of it): ``response-to-pending``, ``unsolicited-response``, ``notification-known-sub``,
``notification-unknown-sub`` or ``other``; sent frames are ``request``, ``batch`` or ``notification``;
``event`` frames record a close and each strict pairing error. ``message_rows`` turns a trace into
rows for ``workbook.plots.sequence_chart``. Waits are on futures with deadlines; ``close()`` closes
everything the client opened.

Given a :class:`workbook.History` (``history=``), each request is also recorded there as one operation
(process = the client's name, f = the method, key = the request id): ``ok`` with its result, ``fail``
for a JSON-RPC error object (the server answered), ``info`` for a timeout or a lost connection (the
request may have run): :func:`rpc_outcome`.

The strict model assumes answers come back in request order, as they do from one upstream when a
client has one request in flight; drive strict clients sequentially (await each request) unless the
point is to show what reordering does to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection

from workbook._exceptions import ConnectionLost, RequestTimeout, RpcClientError, RpcResponseError
from workbook.history import History
from workbook.waiting import wait_until

ClientKind = Literal["strict", "geth"]
RESPONSE_TO_PENDING = "response-to-pending"
UNSOLICITED_RESPONSE = "unsolicited-response"
NOTIFICATION_KNOWN_SUB = "notification-known-sub"
NOTIFICATION_UNKNOWN_SUB = "notification-unknown-sub"
OTHER = "other"










@dataclass(frozen=True)
class Frame:
    """One frame (or event) of a client's history."""

    seq: int
    mono: float
    wall: float
    client: str
    direction: str  # "sent" | "received" | "event"
    kind: str  # the classification
    message: Any  # parsed JSON (None if the frame was not JSON)
    raw: str | None = None  # the text, kept only when it did not parse
    note: str | None = None  # what the client did about it (strict pairing errors, close codes)

    @property
    def id(self) -> Any:
        return self.message.get("id") if isinstance(self.message, dict) else None

    @property
    def method(self) -> str | None:
        return self.message.get("method") if isinstance(self.message, dict) else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Waiter:
    id: Any
    method: str
    future: asyncio.Future[dict[str, Any]]
    sent_mono: float = field(default_factory=time.monotonic)


def rpc_outcome(exc: BaseException) -> tuple[str, Any]:
    """How a JSON-RPC client classifies an error: an error object is ``fail``, anything else ``info``."""
    return ("fail", exc.code) if isinstance(exc, RpcResponseError) else ("info", None)


async def _recorded(client: WsClient | HttpClient, method: str, params: Any, req_id: Any,
                    call: Callable[[], Awaitable[Any]]) -> Any:
    """Run one request, recorded as an operation of the client's history when it has one."""
    if client.history is None:
        return await call()
    done = await client.history.record(client.name, method, call, node=client.url, key=req_id, value=params,
                                       outcome=rpc_outcome, reraise=True)
    return done.value


class _Recorder:
    """The trace (every frame, in order) of one client."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.trace: list[Frame] = []
        self._seq = itertools.count()

    def add(self, direction: str, kind: str, message: Any, raw: str | None = None,
            note: str | None = None) -> Frame:
        frame = Frame(next(self._seq), time.monotonic(), time.time(), self.name, direction, kind, message,
                      raw, note)
        self.trace.append(frame)
        return frame


def _result_of(response: dict[str, Any], method: str) -> Any:
    if "error" in response:
        err = response["error"] if isinstance(response["error"], dict) else {}
        raise RpcResponseError(err.get("code", 0), err.get("message", str(response["error"])),
                               err.get("data"), method=method, id=response.get("id"))
    return response.get("result")


def _is_response(message: Any) -> bool:
    return isinstance(message, dict) and "id" in message and ("result" in message or "error" in message)


def _is_notification(message: Any) -> bool:
    return (isinstance(message, dict) and message.get("method") == "eth_subscription"
            and isinstance(message.get("params"), dict))


class WsClient:
    """A JSON-RPC WebSocket client of kind ``"strict"`` or ``"geth"`` (see the module docstring)."""

    def __init__(self, conn: ClientConnection, url: str, kind: ClientKind, name: str, binary: bool,
                 history: History | None = None) -> None:
        self.url = url
        self.history = history
        self.kind = kind
        self.name = name
        self.binary = binary
        self._conn = conn
        self._rec = _Recorder(name)
        self._ids = itertools.count(1)
        self._pending: dict[Any, deque[_Waiter]] = {}  # geth: by id (a deque: ids may be reused)
        self._fifo: deque[_Waiter] = deque()  # strict: in send order
        self._stray: deque[dict[str, Any]] = deque()  # strict: answers nobody waited for
        self._outstanding: dict[Any, int] = {}  # truth for classification: id -> unanswered count
        self._subs: dict[str, list[Any]] = {}
        self._changed = asyncio.Event()
        self.protocol_errors: list[str] = []
        self.desynchronised = False
        self.close_code: int | None = None
        self._reader = asyncio.create_task(self._read_loop(), name=f"{name}-reader")

    @classmethod
    async def connect(cls, url: str, kind: ClientKind = "strict", name: str | None = None, *,
                      open_timeout: float = 10.0, max_size: int | None = 16 * 1024 * 1024,
                      binary: bool = False, history: History | None = None) -> WsClient:
        """Open a WebSocket to *url*; *binary* sends requests as binary frames (as web3.py does);
        with *history*, every request is recorded there as an operation."""
        if kind not in ("strict", "geth"):
            raise ValueError(f"kind must be 'strict' or 'geth', got {kind!r}")
        conn = await websockets.connect(url, open_timeout=open_timeout, max_size=max_size,
                                        ping_interval=None, compression=None)
        return cls(conn, url, kind, name or f"{kind}-client", binary, history)

    # -- state --------------------------------------------------------------------------------------------

    @property
    def trace(self) -> list[Frame]:
        """Every frame sent and received, in order (the wire, below the operation history)."""
        return self._rec.trace

    @property
    def closed(self) -> bool:
        return self._reader.done()

    def frames(self, kind: str | None = None, direction: str | None = None) -> list[Frame]:
        """Trace frames of one classification and/or direction."""
        return [f for f in self.trace if (kind is None or f.kind == kind)
                and (direction is None or f.direction == direction)]

    def notifications(self, sub_id: str) -> list[Any]:
        """The results received so far under subscription *sub_id* (live while the subscription is held)."""
        return self._subs.get(sub_id, [])

    @property
    def subscriptions(self) -> list[str]:
        return list(self._subs)

    async def wait_notifications(self, sub_id: str, count: int, timeout: float = 10.0) -> list[Any]:  # noqa: ASYNC109
        """Wait until *sub_id* has at least *count* notifications; RequestTimeout after *timeout*."""

        def arrived() -> bool:
            if self.closed and len(self.notifications(sub_id)) < count:
                raise ConnectionLost(f"{self.name}: connection closed ({self.close_code})")
            return len(self.notifications(sub_id)) >= count

        await wait_until(arrived, timeout, lambda: f"{self.name}: {len(self.notifications(sub_id))} of "
                         f"{count} notifications on {sub_id}", poll=0.5, wake=self._changed,
                         error=RequestTimeout)
        return self.notifications(sub_id)

    async def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true, re-checked on every received frame; deadline *timeout*."""
        await wait_until(predicate, timeout, f"{self.name}: {what}", poll=0.5, wake=self._changed,
                         error=RequestTimeout)

    # -- sending ------------------------------------------------------------------------------------------

    async def send_raw(self, payload: Any, *, binary: bool | None = None) -> None:
        """Send *payload* as is (a str/bytes frame, or JSON-encoded otherwise), recorded, no waiting."""
        if isinstance(payload, str | bytes):
            text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
            try:
                message: Any = json.loads(text)
            except ValueError:
                message = None
            data: str | bytes = payload
        else:
            message = payload
            text = json.dumps(payload, separators=(",", ":"))
            data = text.encode() if (self.binary if binary is None else binary) else text
        kind = "batch" if isinstance(message, list) else (
            "request" if isinstance(message, dict) and "id" in message else "notification")
        self._rec.add("sent", kind, message, raw=None if message is not None else text[:2000])
        await self._conn.send(data)

    async def request(self, method: str, params: Sequence[Any] | dict[str, Any] | None = None,
                      id: Any = None, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """Send a request and wait for its answer (its result; RpcResponseError for an error object).

        *id* defaults to the next integer; give one to reuse ids on purpose.
        """
        req_id = next(self._ids) if id is None else id
        return await _recorded(self, method, params, req_id,
                               lambda: self._request(method, params, req_id, timeout))

    async def _request(self, method: str, params: Sequence[Any] | dict[str, Any] | None, req_id: Any,
                       timeout: float) -> Any:  # noqa: ASYNC109
        message = {"jsonrpc": "2.0", "id": req_id, "method": method,
                   "params": list(params) if isinstance(params, list | tuple) else (params or [])}
        waiter = _Waiter(req_id, method, asyncio.get_running_loop().create_future())
        self._outstanding[req_id] = self._outstanding.get(req_id, 0) + 1
        if self.kind == "geth":
            self._pending.setdefault(req_id, deque()).append(waiter)
        else:
            self._fifo.append(waiter)
        try:
            try:
                await self.send_raw(message)
            except websockets.ConnectionClosed:
                raise ConnectionLost(f"{self.name}: connection closed ({self.close_code}); "
                                     f"{method} (id {req_id!r}) not sent") from None
            if self.kind == "strict" and self._stray:
                self._pair_strict(self._stray.popleft())
            response = await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except TimeoutError:
            raise RequestTimeout(f"{self.name}: no answer to {method} (id {req_id!r}) within {timeout:g} s"
                                 + (" [client desynchronised]" if self.desynchronised else "")) from None
        finally:
            self._forget(waiter)
        return _result_of(response, method)

    def _forget(self, waiter: _Waiter) -> None:
        if not waiter.future.done():
            waiter.future.cancel()
        queue = self._pending.get(waiter.id)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._pending[waiter.id]
        # a strict client keeps a timed-out waiter's slot: in-order pairing still counts it

    async def subscribe(self, kind: str, *params: Any, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        """``eth_subscribe`` and start collecting its notifications; returns the subscription id."""
        sub_id = await self.request("eth_subscribe", [kind, *params], timeout=timeout)
        if not isinstance(sub_id, str):
            raise RpcClientError(f"{self.name}: eth_subscribe answered {sub_id!r}, not a subscription id")
        return sub_id  # registered by the reader with the answer, before any notification under it

    async def unsubscribe(self, sub_id: str, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        result = await self.request("eth_unsubscribe", [sub_id], timeout=timeout)
        self._subs.pop(sub_id, None)
        return result

    # -- receiving ----------------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            async for data in self._conn:
                text = data if isinstance(data, str) else data.decode("utf-8", "replace")
                self._on_frame(text)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._conn.close_code
            self._rec.add("event", OTHER, None, note=f"closed code={self._conn.close_code} "
                                                     f"reason={self._conn.close_reason!r}")
            for waiter in [*self._fifo, *(w for q in self._pending.values() for w in q)]:
                if not waiter.future.done():
                    waiter.future.set_exception(ConnectionLost(
                        f"{self.name}: connection closed ({self._conn.close_code}) before the answer to "
                        f"{waiter.method} (id {waiter.id!r})"))
            self._changed.set()

    def _classify_response(self, message: dict[str, Any]) -> str:
        count = self._outstanding.get(message["id"], 0)
        if count <= 0:
            return UNSOLICITED_RESPONSE
        if count == 1:
            del self._outstanding[message["id"]]
        else:
            self._outstanding[message["id"]] = count - 1
        return RESPONSE_TO_PENDING

    def _on_frame(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            self._rec.add("received", OTHER, None, raw=text[:2000], note="not JSON")
            return
        items = message if isinstance(message, list) else [message]
        kinds = []
        notes = []
        for item in items:
            kind, note = self._on_message(item)
            kinds.append(kind)
            if note:
                notes.append(note)
        kind = kinds[0] if len(set(kinds)) == 1 else OTHER
        self._rec.add("received", kind, message, note="; ".join(notes) or None)
        self._changed.set()

    def _on_message(self, message: Any) -> tuple[str, str | None]:
        if _is_notification(message):
            sub_id = message["params"].get("subscription")
            if isinstance(sub_id, str) and sub_id in self._subs:
                self._subs[sub_id].append(message["params"].get("result"))
                return NOTIFICATION_KNOWN_SUB, None
            if self.kind == "strict":
                self.protocol_errors.append(f"notification under unknown subscription {sub_id!r}")
            return NOTIFICATION_UNKNOWN_SUB, "dropped: unknown subscription"
        if not _is_response(message):
            return OTHER, None
        kind = self._classify_response(message)
        if self.kind == "geth":
            queue = self._pending.get(message["id"])
            if not queue:
                return kind, "dropped: no pending request with this id"
            waiter = queue.popleft()
            if not queue:
                del self._pending[message["id"]]
            self._deliver(waiter, message)
            return kind, None
        if not self._fifo:
            self._stray.append(message)
            self.protocol_errors.append(f"response id {message['id']!r} arrived with no request waiting")
            return kind, "kept: no request waiting; the next request will be paired with it"
        return kind, self._pair_strict(message)

    def _deliver(self, waiter: _Waiter, message: dict[str, Any]) -> None:
        """Hand *message* to *waiter*; an ``eth_subscribe`` answer registers its subscription at once,
        as a real client's reader does, so a notification right behind it is not taken for unknown."""
        if waiter.method == "eth_subscribe" and isinstance(message.get("result"), str):
            self._subs.setdefault(message["result"], [])
        if not waiter.future.done():
            waiter.future.set_result(message)

    def _pair_strict(self, message: dict[str, Any]) -> str | None:
        """In-order pairing: *message* answers the oldest waiter, or is a protocol error."""
        if not self._fifo:
            self._stray.appendleft(message)
            return None
        waiter = self._fifo.popleft()
        if message["id"] == waiter.id:
            self._deliver(waiter, message)
            return None
        self.desynchronised = True
        error = (f"response id {message['id']!r} paired with request {waiter.method} id {waiter.id!r}: "
                 "id mismatch, answer discarded")
        self.protocol_errors.append(error)
        self._rec.add("event", OTHER, message, note=error)
        return error

    # -- closing ------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection and wait for the reader to finish."""
        await self._conn.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class HttpClient:
    """JSON-RPC over HTTP with a pooled aiohttp session; records every body sent and received."""

    def __init__(self, url: str, *, name: str = "http-client", limit: int = 100,
                 timeout: float = 10.0, history: History | None = None) -> None:
        self.url = url
        self.history = history
        self.name = name
        self.timeout = timeout
        self._rec = _Recorder(name)
        self._ids = itertools.count(1)
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: aiohttp wants a running event loop
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._limit),
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    @property
    def trace(self) -> list[Frame]:
        """Every body sent and received, in order."""
        return self._rec.trace

    async def post(self, payload: Any, timeout: float | None = None) -> tuple[int, Any]:  # noqa: ASYNC109
        """POST *payload* (str/bytes as is, else JSON); returns (HTTP status, parsed body or None)."""
        if isinstance(payload, str | bytes):
            data = payload.encode() if isinstance(payload, str) else payload
            try:
                message: Any = json.loads(data)
            except ValueError:
                message = None
        else:
            message = payload
            data = json.dumps(payload, separators=(",", ":")).encode()
        kind = "batch" if isinstance(message, list) else "request"
        self._rec.add("sent", kind, message, raw=None if message is not None else data[:2000].decode(
            "utf-8", "replace"))
        per_call = aiohttp.ClientTimeout(total=timeout) if timeout is not None else None
        try:
            async with self._open().post(self.url, data=data, timeout=per_call,
                                          headers={"Content-Type": "application/json"}) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise RequestTimeout(f"{self.name}: no answer from {self.url} within "
                                 f"{timeout if timeout is not None else self.timeout:g} s") from None
        try:
            answer = json.loads(body) if body else None
        except ValueError:
            answer = None
        self._rec.add("received", OTHER if answer is None else (
            RESPONSE_TO_PENDING if status == 200 else OTHER), answer,
            raw=None if answer is not None or not body else body[:2000].decode("utf-8", "replace"),
            note=None if status == 200 else f"HTTP {status}")
        return status, answer

    async def request(self, method: str, params: Sequence[Any] | dict[str, Any] | None = None,
                      id: Any = None, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """One call; returns its result, raises RpcResponseError for an error object."""
        req_id = next(self._ids) if id is None else id
        return await _recorded(self, method, params, req_id,
                               lambda: self._request(method, params, req_id, timeout))

    async def _request(self, method: str, params: Sequence[Any] | dict[str, Any] | None, req_id: Any,
                       timeout: float | None) -> Any:  # noqa: ASYNC109
        status, answer = await self.post({"jsonrpc": "2.0", "id": req_id, "method": method,
                                          "params": list(params) if isinstance(params, list | tuple)
                                          else (params or [])}, timeout)
        if not isinstance(answer, dict):
            raise RpcClientError(f"{self.name}: {method}: HTTP {status} with a non-JSON-RPC body")
        if answer.get("id") != req_id:
            raise RpcClientError(f"{self.name}: {method}: answer has id {answer.get('id')!r}, not {req_id!r}")
        return _result_of(answer, method)

    async def batch(self, calls: Iterable[tuple[str, Sequence[Any] | None]],
                    timeout: float | None = None) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """One batch; returns the response objects matched by id, in the order of *calls*."""
        requests = [{"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params or [])}
                    for method, params in calls]
        status, answer = await self.post(requests, timeout)
        if not isinstance(answer, list):
            raise RpcClientError(f"{self.name}: batch: HTTP {status}, answer is not a list: {answer!r}"[:300])
        by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
        missing = [r["id"] for r in requests if r["id"] not in by_id]
        if missing:
            raise RpcClientError(f"{self.name}: batch: no answer for ids {missing}")
        return [by_id[r["id"]] for r in requests]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _label(frame: Frame) -> str:
    message = frame.message
    if frame.direction == "event":
        return frame.note or "event"
    if isinstance(message, list):
        return f"batch of {len(message)}"
    if not isinstance(message, dict):
        return "not JSON" if message is None else type(message).__name__
    if _is_notification(message):
        return f"notification sub={str(message['params'].get('subscription'))[:10]}…"
    if "method" in message:
        return f"{message['method']} id={message.get('id')!r}"
    if "error" in message:
        code = message["error"].get("code") if isinstance(message["error"], dict) else "?"
        return f"error {code} id={message.get('id')!r}"
    result = message.get("result")
    shown = result if isinstance(result, str | int | bool) or result is None else type(result).__name__
    return f"result {str(shown)[:14]} id={message.get('id')!r}"


HIGHLIGHTED = (UNSOLICITED_RESPONSE, NOTIFICATION_UNKNOWN_SUB)


def message_rows(client: WsClient | HttpClient, peer: str = "proxy") -> list[dict[str, Any]]:
    """The client's trace as rows for ``workbook.plots.sequence_chart`` (``ts, src, dst, label,
    highlight, kind``): lanes are the client's name and *peer*; unsolicited answers, notifications
    under unknown ids and strict pairing errors are highlighted."""
    rows = []
    for frame in client.trace:
        outgoing = frame.direction == "sent"
        src = client.name if outgoing or frame.direction == "event" else peer
        rows.append({"ts": frame.wall, "src": src, "dst": peer if outgoing else client.name,
                     "label": _label(frame), "kind": frame.kind,
                     "highlight": frame.kind in HIGHLIGHTED or bool(frame.note and "mismatch" in frame.note)})
    return rows


def trace_records(*clients: WsClient | HttpClient) -> list[dict[str, Any]]:
    """All clients' traces as dicts sorted by monotonic time (``pandas.DataFrame(...)``-ready)."""
    frames = [f.as_dict() for c in clients for f in c.trace]
    return sorted(frames, key=lambda f: f["mono"])
