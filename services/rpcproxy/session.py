"""A client WebSocket session: one client connection, one upstream link at a time, moved between upstreams.

What the session guarantees (each defect switch marks the branch where the historical proxy did otherwise):
- every client request goes upstream under a proxy-unique id and its answer comes back under the client's
  id, exactly once; ids may be reused and many requests may be in flight (``relay``);
- the subscription ids the client holds never change: after a move the proxy re-subscribes under its own
  ids, swallows those answers and maps the new upstream ids back to the client's (``moves``);
- during a move client messages wait in a bounded queue and are flushed, in order, once the new upstream
  is subscribed; overflow is answered with errors (``moves``);
- requests in flight on a lost upstream are re-sent when read-only, answered with an error otherwise
  (``moves``);
- a failback is make-before-break (``moves``); newHeads are de-duplicated across moves and gaps filled
  (``heads``).
This module holds the session's state, its client writer and its life cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web
from servicekit import JsonLogger

from rpcproxy import jsonrpc
from rpcproxy.config import ProxyConfig
from rpcproxy.heads import HeadPump
from rpcproxy.health import HealthMonitor
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.moves import Moves
from rpcproxy.relay import Batch, Relay
from rpcproxy.tables import IdAllocator, PendingTable, SubscriptionTable
from rpcproxy.upstream_ws import UpstreamLink


@dataclass
class Shared:
    """What every session of one proxy shares."""

    config: ProxyConfig
    monitor: HealthMonitor
    metrics: ProxyMetrics
    log: JsonLogger
    defects: frozenset[str]
    policy: jsonrpc.MethodPolicy
    ids: IdAllocator


class WsSession(Relay, Moves):
    """One client WebSocket, bridged to the current upstream link."""

    def __init__(self, shared: Shared, client: web.WebSocketResponse, session_id: str) -> None:
        self.s = shared
        self.cfg = shared.config
        self.client = client
        self.id = session_id
        self.link: UpstreamLink | None = None
        self.attached: str | None = None  # upstream this session is counted under in the sessions gauge
        self.pending = PendingTable(shared.ids)
        self.subs = SubscriptionTable()
        self.moving = False
        self.move_reason: str | None = None
        self.closed = False
        self.queue: deque[tuple[Any, Batch | None, int, bool]] = deque()  # (obj, batch, size, is_frame)
        self.queued_bytes = 0
        self.queued_frames = 0  # client frames in the queue (re-sends of accepted requests do not count)
        self.queue_since: float | None = None
        self.moves = 0
        self._move_task: asyncio.Task[None] | None = None
        self._links: set[UpstreamLink] = set()
        self._answered = asyncio.Event()  # set on every upstream response (drains wait on it)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outq: asyncio.Queue[str | None] = asyncio.Queue()
        self._out_bytes = 0
        self._too_slow = False
        self.heads = HeadPump(
            shared.config,
            shared.metrics,
            out=self.out,
            call=self._internal_call,
            holds=lambda client_id: client_id in self.subs,
            event=self._event,
        )
        self._writer = self._spawn(self._write_loop(), "writer")
        self._head_pump = self._spawn(self.heads.run(), "heads")

    # -- plumbing ---------------------------------------------------------------------------------------

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"session-{self.id}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _has(self, defect: str) -> bool:
        return defect in self.s.defects

    def out(self, text: str) -> None:
        """Queue one frame for the client (a single writer task keeps frames in order).

        A client that does not read cannot make the proxy buffer without bound: past
        ``ws_send_queue_max_bytes`` the session is closed (1008) rather than growing.
        """
        if self.closed or self._too_slow:
            return
        self._out_bytes += jsonrpc.utf8_size(text)
        if self._out_bytes > self.cfg.ws_send_queue_max_bytes:
            self._too_slow = True
            self.s.metrics.dropped.labels("slow_client").inc()
            self._event("ws.client_too_slow", "warning", queued_bytes=self._out_bytes)
            self._spawn(self.client.close(code=1008, message=b"client too slow"), "close-slow")
            return
        self._outq.put_nowait(text)

    async def _write_loop(self) -> None:
        while True:
            text = await self._outq.get()
            if text is None:
                return
            self._out_bytes -= jsonrpc.utf8_size(text)
            try:
                await self.client.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    def _event(self, event: str, level: str = "info", **fields: Any) -> None:
        self.s.log.event(event, level, session=self.id, **fields)

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "upstream": self.attached,
            "moving": self.moving,
            "moves": self.moves,
            "subscriptions": len(self.subs),
            "in_flight": len(self.pending),
            "queued": len(self.queue),
        }

    # -- life cycle -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Attach to an upstream, then relay client frames until the client goes away."""
        self.s.metrics.ws_clients.inc()
        try:
            self.moving = True
            await self._move("initial", None)
            if self.link is None:
                await self.client.close(code=1013, message=b"no healthy upstream")
                return
            async for msg in self.client:
                if msg.type == WSMsgType.TEXT:
                    await self._on_client_frame(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._on_client_frame(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    self._event("ws.client_error", "warning", error=str(self.client.exception()))
                    break
        finally:
            await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._outq.put_nowait(None)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and task is not self._writer:
                task.cancel()
        if self._move_task is not None and self._move_task is not current:
            self._move_task.cancel()
        for link in list(self._links):
            await link.close()
        for task in list(self._tasks):
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._move_task is not None and self._move_task is not current:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._move_task
        m = self.s.metrics
        m.ws_clients.dec()
        if self.attached is not None:
            m.sessions.labels(self.attached).dec()
            self.attached = None
        m.subscriptions.dec(len(self.subs))
        self.subs = SubscriptionTable()
        self._event("ws.session_closed", moves=self.moves)
