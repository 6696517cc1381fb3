"""The aiohttp application: JSON-RPC over HTTP (``POST /``) and WebSocket (``GET /``), health, metrics,
block production with subscription notifications, heartbeats, and the admin fault API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST
from servicekit import JsonLogger

from elnode import rpc
from elnode.faults import FaultError
from elnode.methods import METHODS
from elnode.metrics import Metrics
from elnode.node import Node
from elnode.rpc import RpcError
from elnode.subscriptions import Subscription, parse_subscribe

MAX_BATCH = 1000
MAX_CATCHUP_BLOCKS = 64  # after a stall ends, notify at most this many missed heads
SEND_QUEUE_LIMIT = 10_000  # a WebSocket client this far behind is disconnected, as geth does
MAX_LOGGED_ID = 80
CLOSE_TIMEOUT = 2.0  # seconds a peer has to take a close frame before its connection is aborted
MAX_HELD_PER_CONNECTION = 10_000  # delayed answers in flight per WebSocket before reading pauses


def _short(value: Any) -> Any:
    """A request id fit for a log line (ids may be megabytes long)."""
    if value is None or (isinstance(value, int) and -(10**18) < value < 10**18):
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    return value if len(text) <= MAX_LOGGED_ID else text[:MAX_LOGGED_ID] + "..."


class WsSession:
    """One WebSocket connection: its subscriptions and an ordered outgoing queue drained by a writer task."""

    def __init__(self, conn_id: int, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.id = conn_id
        self.ws = ws
        self.remote = request.remote
        self.transport = request.transport
        self.subscriptions: dict[str, Subscription] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.writer: asyncio.Task[None] | None = None
        self.close_reason = "client closed"

    async def close(self, code: int, message: bytes) -> None:
        """Send a close frame; a peer that cannot take it in time (paused, not reading) is aborted."""
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once (a reset, as a crashed node's peers see it)."""
        if self.transport is not None:
            self.transport.abort()

    async def write_loop(self) -> None:
        while True:
            text = await self.queue.get()
            if self.ws.closed:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return


class ElNode:
    """A simulated execution node; ``app()`` builds its routes, ``start``/``stop`` run it."""

    def __init__(self, node: Node, log: JsonLogger, *, fault_injection: bool, max_message_size: int,
                 log_requests: bool = True) -> None:
        self.node = node
        self.log = log
        self.fault_injection = fault_injection
        self.max_message_size = max_message_size
        self.log_requests = log_requests
        self.metrics = Metrics(node.name)
        self.sessions: dict[int, WsSession] = {}
        self._conn_ids = itertools.count(1)
        self._wakeups: list[asyncio.Event] = []
        self._background: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_message_size)
        app.router.add_post("/", self.http_rpc)
        app.router.add_get("/", self.websocket)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        if self.fault_injection:
            app.router.add_get("/admin/faults", self.admin_get)
            app.router.add_post("/admin/faults", self.admin_set)
            app.router.add_post("/admin/faults/reset", self.admin_reset)
            app.router.add_post("/admin/drop-websockets", self.admin_drop)
        return app

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind (port 0 picks one), start block production and heartbeats; return the bound address."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.address = (bound[0], bound[1])
        self._background = [asyncio.create_task(self._produce_blocks(), name="blocks"),
                            asyncio.create_task(self._heartbeats(), name="heartbeats")]
        return self.address

    async def stop(self) -> None:
        """Close every WebSocket (1001 going away), stop background work and the listener."""
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(s.close(1001, b"node shutting down") for s in list(self.sessions.values())),
                             return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def _wake(self) -> asyncio.Event:
        event = asyncio.Event()
        self._wakeups.append(event)
        return event

    def _knobs_changed(self) -> None:
        for event in self._wakeups:
            event.set()

    # -- JSON-RPC -----------------------------------------------------------------------------------------

    async def handle_message(self, data: bytes | str, transport: str,
                             session: WsSession | None) -> str | None:
        """Answer one body or frame (single request or batch); None when nothing is to be sent back."""
        try:
            message = rpc.decode(data)
        except RpcError as err:
            self._count(transport, "<parse>", "parse_error")
            return rpc.encode(rpc.error(None, err))
        if isinstance(message, list):
            if not message:
                self._count(transport, "<batch>", "invalid")
                err = RpcError(rpc.INVALID_REQUEST, "invalid request: empty batch")
                return rpc.encode(rpc.error(None, err))
            if len(message) > MAX_BATCH:
                self._count(transport, "<batch>", "invalid")
                return rpc.encode(rpc.error(None, RpcError(
                    rpc.INVALID_REQUEST, f"invalid request: batch too large (at most {MAX_BATCH})")))
            if self.node.faults.delay:
                answers = await asyncio.gather(*(self.handle_one(m, transport, session) for m in message))
            else:
                answers = [await self.handle_one(m, transport, session) for m in message]
            kept = [a for a in answers if a is not None]
            return rpc.encode(kept) if kept else None
        answer = await self.handle_one(message, transport, session)
        return None if answer is None else rpc.encode(answer)

    async def handle_one(self, obj: Any, transport: str, session: WsSession | None) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            req = rpc.validate(obj)
        except RpcError as err:
            self._count(transport, "<invalid>", "invalid")
            return rpc.error(rpc.request_id(obj), err)
        code = None
        try:
            response = rpc.result(req.id, await self.call(req, session))
            outcome = "ok"
        except RpcError as err:
            response = rpc.error(req.id, err)
            outcome, code = "error", err.code
        except Exception as exc:  # a bug must answer -32603, never take the node down
            self.log.error("rpc.internal_error", method=req.method, error=repr(exc))
            response = rpc.error(req.id, RpcError(rpc.INTERNAL_ERROR, "internal error"))
            outcome, code = "error", rpc.INTERNAL_ERROR
        elapsed = time.perf_counter() - started
        self._count(transport, req.method, outcome)
        self.metrics.latency.labels(transport).observe(elapsed)
        if self.log_requests:
            self.log.info("rpc.request", transport=transport, conn=session.id if session else None,
                          method=req.method[:MAX_LOGGED_ID], id=_short(req.id), outcome=outcome, code=code,
                          ms=round(elapsed * 1000, 3))
        return None if req.is_notification else response

    def _count(self, transport: str, method: str, outcome: str) -> None:
        self.metrics.requests.labels(transport, self.metrics.method_label(method), outcome).inc()

    async def call(self, req: rpc.Request, session: WsSession | None) -> Any:
        faults = self.node.faults
        if faults.delay:
            delay = faults.delay_for(req.method)
            if delay > 0:
                self.metrics.faults.labels("delay").inc()
                self.log.info("fault.delay", method=req.method[:MAX_LOGGED_ID], seconds=delay)
                await asyncio.sleep(delay)
        if faults.fail:
            rule = faults.failure_for(req.method)
            if rule is not None:
                self.metrics.faults.labels("fail").inc()
                self.log.info("fault.fail", method=req.method[:MAX_LOGGED_ID], code=rule.code)
                raise RpcError(rule.code, rule.message)
        method = METHODS.get(req.method)
        if method is not None:
            return method(self.node, req.params)
        if req.method in ("eth_subscribe", "eth_unsubscribe"):
            if session is None:
                raise RpcError(rpc.METHOD_NOT_FOUND, "notifications not supported")
            if req.method == "eth_subscribe":
                return self._subscribe(session, req.params)
            return self._unsubscribe(session, req.params)
        raise RpcError(rpc.METHOD_NOT_FOUND,
                       f"the method {req.method[:MAX_LOGGED_ID]} does not exist/is not available")

    def _subscribe(self, session: WsSession, params: Any) -> str:
        sub = parse_subscribe(params, self.node)
        session.subscriptions[sub.id] = sub
        self.metrics.subscriptions.labels(sub.kind).inc()
        self.log.info("subscription.created", conn=session.id, subscription=sub.id, kind=sub.kind)
        return sub.id

    def _unsubscribe(self, session: WsSession, params: Any) -> bool:
        if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], str):
            raise RpcError(rpc.INVALID_PARAMS, "invalid params: expected [subscription id]")
        sub = session.subscriptions.pop(params[0], None)
        if sub is None:
            raise RpcError(rpc.SERVER_ERROR, "subscription not found")
        self.metrics.subscriptions.labels(sub.kind).dec()
        self.log.info("subscription.removed", conn=session.id, subscription=sub.id, kind=sub.kind)
        return True

    # -- HTTP ---------------------------------------------------------------------------------------------

    async def http_rpc(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._count("http", "<oversize>", "invalid")
            err = RpcError(rpc.INVALID_REQUEST, f"request too large (at most {self.max_message_size} bytes)")
            return web.Response(status=413, text=rpc.encode(rpc.error(None, err)),
                                content_type="application/json")
        reply = await self.handle_message(body, "http", None)
        return web.Response(text=reply or "", content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "name": self.node.name, "head": self.node.head(),
                                  "ws_connections": len(self.sessions)})

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.head.set(self.node.head())
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- WebSocket ----------------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=self.max_message_size, autoping=True, compress=False,
                                   timeout=CLOSE_TIMEOUT)
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "POST JSON-RPC to / or open a WebSocket on /"}, status=400)
        hold = self.node.faults.take_handshake_delay()
        if hold > 0:
            self.metrics.faults.labels("slow_handshake").inc()
            self.log.info("fault.slow_handshake", seconds=hold, remaining=self.node.faults.as_json()
                          ["slow_handshake"])
            await asyncio.sleep(hold)
        await ws.prepare(request)
        session = WsSession(next(self._conn_ids), ws, request)
        session.writer = asyncio.create_task(session.write_loop())
        self.sessions[session.id] = session
        self.metrics.ws_connections.inc()
        self.metrics.ws_accepted.inc()
        self.log.info("ws.open", conn=session.id, remote=request.remote)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if self.node.faults.delay and len(session.tasks) < MAX_HELD_PER_CONNECTION:
                        # a held answer must not hold back the others (beyond the cap: backpressure)
                        task = asyncio.create_task(self._answer(msg.data, session))
                        session.tasks.add(task)
                        task.add_done_callback(session.tasks.discard)
                    else:
                        await self._answer(msg.data, session)
                elif msg.type == WSMsgType.ERROR:
                    session.close_reason = f"error: {ws.exception()!r}"
                    break
        finally:
            self.sessions.pop(session.id, None)
            for task in [*session.tasks, session.writer]:
                task.cancel()
            await asyncio.gather(*session.tasks, session.writer, return_exceptions=True)
            for sub in session.subscriptions.values():
                self.metrics.subscriptions.labels(sub.kind).dec()
            self.metrics.ws_connections.dec()
            self.log.info("ws.close", conn=session.id, reason=session.close_reason, close_code=ws.close_code,
                          subscriptions=len(session.subscriptions))
        return ws

    async def _answer(self, data: bytes | str, session: WsSession) -> None:
        reply = await self.handle_message(data, "ws", session)
        if reply is not None:
            self._enqueue(session, reply)

    def _enqueue(self, session: WsSession, text: str) -> None:
        if session.queue.qsize() >= SEND_QUEUE_LIMIT:
            self.log.warning("ws.slow_consumer", conn=session.id, queued=session.queue.qsize())
            session.queue = asyncio.Queue()
            session.close_reason = "slow consumer"
            session.abort()  # its writer is stuck on a full socket: a close frame could not get through
            return
        session.queue.put_nowait(text)

    def _notify(self, session: WsSession, sub: Subscription, result: Any) -> None:
        self.metrics.notifications.labels(sub.kind).inc()
        self._enqueue(session, rpc.encode({"jsonrpc": "2.0", "method": "eth_subscription",
                                           "params": {"subscription": sub.id, "result": result}}))

    # -- block production and heartbeats ------------------------------------------------------------------

    async def _produce_blocks(self) -> None:
        """Notify subscribers of each new head as the clock (bent by stall/lag) reaches it."""
        wake = self._wake()
        last = self.node.head()
        self.metrics.head.set(last)
        while True:
            head = self.node.head()
            if head > last:
                for number in range(max(last + 1, head - MAX_CATCHUP_BLOCKS + 1), head + 1):
                    self._broadcast_block(number)
                last = head
                self.metrics.head.set(head)
            for session in list(self.sessions.values()):
                for sub in list(session.subscriptions.values()):
                    if sub.kind == "syncing":
                        for result in sub.syncing_change(self.node):
                            self._notify(session, sub, result)
            next_at = self.node.chain.block_start(self.node.clock_head() + 1)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.001, next_at - time.time() + 0.0005))

    def _broadcast_block(self, number: int) -> None:
        for session in list(self.sessions.values()):
            for sub in list(session.subscriptions.values()):
                for result in sub.results_for_block(self.node, number):
                    self._notify(session, sub, result)

    async def _heartbeats(self) -> None:
        """With ``heartbeat_interval`` set, send every WebSocket an ``elnode_heartbeat`` at that cadence."""
        wake = self._wake()
        seq = 0
        while True:
            interval = self.node.faults.heartbeat_interval
            wake.clear()
            if interval is None:
                await wake.wait()
                continue
            try:
                await asyncio.wait_for(wake.wait(), interval)
                continue  # the knobs changed: start over with the new interval
            except TimeoutError:
                pass
            seq += 1
            text = rpc.encode({"jsonrpc": "2.0", "method": "elnode_heartbeat",
                               "params": {"seq": seq, "ts": time.time(), "node": self.node.name,
                                          "head": hex(self.node.head())}})
            for session in list(self.sessions.values()):
                self._enqueue(session, text)

    # -- admin (only with --enable-fault-injection) --------------------------------------------------------

    async def admin_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.node.faults.as_json())

    async def admin_set(self, request: web.Request) -> web.Response:
        try:
            patch = json.loads(await request.text())
            self.node.set_faults(patch)
        except (ValueError, FaultError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        knobs = self.node.faults.as_json()
        self.log.info("fault.set", patch=patch, knobs=knobs, head=self.node.head())
        self._knobs_changed()
        return web.json_response(knobs)

    async def admin_reset(self, request: web.Request) -> web.Response:
        self.node.reset_faults()
        self.log.info("fault.reset", head=self.node.head())
        self._knobs_changed()
        return web.json_response(self.node.faults.as_json())

    async def admin_drop(self, request: web.Request) -> web.Response:
        """Close every WebSocket now: ``{"mode": "close"}`` (close frame 1001, default) or ``"abort"``."""
        try:
            body = json.loads(await request.text() or "{}")
            mode = body.get("mode", "close") if isinstance(body, dict) else None
        except ValueError:
            mode = None
        if mode not in ("close", "abort"):
            return web.json_response({"error": 'body must be {} or {"mode": "close"|"abort"}'}, status=400)
        sessions = list(self.sessions.values())
        for session in sessions:
            session.close_reason = f"dropped by fault injection ({mode})"
        self.metrics.faults.labels("drop_websockets").inc(len(sessions))
        self.log.info("fault.drop_websockets", mode=mode, conns=[s.id for s in sessions])
        if mode == "abort":
            for session in sessions:
                session.abort()
        else:
            await asyncio.gather(*(s.close(1001, b"dropped by fault injection") for s in sessions),
                                 return_exceptions=True)
        return web.json_response({"dropped": len(sessions), "mode": mode})
