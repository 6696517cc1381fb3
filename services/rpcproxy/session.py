"""A client WebSocket session under asyncio: it carries frames and timers for the session core (``wscore``),
which makes every decision, and leaves the upstream links to its ``Mover``.

The client side is one reader (this task) and one writer task, so frames reach the client in the order the
core produced them; a client that does not read is closed (1008) rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web
from servicekit import JsonLogger

from rpcproxy import jsonrpc
from rpcproxy.config import ProxyConfig
from rpcproxy.corking import corked
from rpcproxy.health import HealthMonitor
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.mover import MonitorHealth, Mover
from rpcproxy.tables import IdAllocator, SubscriptionTable
from rpcproxy.wsactions import (
    Action,
    CancelTimer,
    CloseLink,
    OpenLink,
    Ready,
    StartTimer,
    ToClient,
    ToLink,
    WaitRound,
    WaitRouting,
)
from rpcproxy.wscore import SessionCore


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


class WsSession:
    """One client WebSocket, bridged by its core to the current upstream link."""

    def __init__(self, shared: Shared, client: web.WebSocketResponse, session_id: str) -> None:
        self.s = shared
        self.cfg = shared.config
        self.client = client
        self.id = session_id
        self.closed = False
        self.core = SessionCore(
            shared.config,
            shared.metrics,
            shared.policy,
            shared.ids,
            MonitorHealth(shared.monitor),
            defects=shared.defects,
            clock=time.monotonic,
            event=self._event,
            gate_routing=shared.monitor.serialized,
        )
        self.mover = Mover(shared.config, shared.monitor, self.core, self._perform, session_id)
        self._ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outq: asyncio.Queue[str | None] = asyncio.Queue()
        self._out_bytes = 0
        self._too_slow = False
        self._writer = self._spawn(self._write_loop(), "writer")
        # newHeads leave from a task of their own, after the frames read with them: the session has always
        # delivered them so (their de-dup and gap fill ran as that task). Nothing orders notifications of
        # different subscriptions; flaky-05 shows a test that assumed an order.
        self._headq: asyncio.Queue[str] = asyncio.Queue()
        self._spawn(self._heads_loop(), "heads")

    # -- views the proxy reads --------------------------------------------------------------------------

    @property
    def attached(self) -> str | None:
        """The upstream this session is counted under in the sessions gauge."""
        return self.core.attached

    @property
    def subs(self) -> SubscriptionTable:
        return self.core.subs

    def status(self) -> dict[str, Any]:
        return {"id": self.id, **self.core.status()}

    def evaluate(self) -> None:
        """After each health round: the core decides whether to move."""
        self._perform(self.core.health_changed())

    # -- carrying the core's actions --------------------------------------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        """Carry out *actions* from a callback (frames to links are sent by a task, in order)."""
        for action in actions:
            if isinstance(action, ToClient):  # the common case first: an answer for the client
                self._to_client(action)
            elif isinstance(action, ToLink):
                self.mover.post(action.link, action.text)
            else:
                self._act(action)

    async def _perform_waiting(self, actions: list[Action]) -> None:
        """Carry out *actions* from the client reader, waiting for the upstream sockets to take the frames."""
        for action in actions:
            if isinstance(action, ToLink):
                await self.mover.send(action.link, action.text)
            else:
                self._act(action)

    def _to_client(self, action: ToClient) -> None:
        if action.heads:
            self._headq.put_nowait(action.text)
        else:
            self.out(action.text)

    async def _heads_loop(self) -> None:
        while True:
            self.out(await self._headq.get())

    def _act(self, action: Action) -> None:
        if isinstance(action, ToClient):
            self._to_client(action)
        elif isinstance(action, StartTimer):
            old = self._timers.pop(action.key, None)
            if old is not None:
                old.cancel()
            loop = asyncio.get_running_loop()
            self._timers[action.key] = loop.call_later(action.delay, self._timer, action.key)
        elif isinstance(action, CancelTimer):
            handle = self._timers.pop(action.key, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(action, OpenLink):
            self.mover.open(action.link)
        elif isinstance(action, CloseLink):
            self.mover.close(action.link)
        elif isinstance(action, WaitRound):
            self.mover.wait_round(action.within)
        elif isinstance(action, WaitRouting):
            self.mover.wait_routing()
        elif isinstance(action, Ready) and not self._ready.done():
            self._ready.set_result(action.ok)

    def _timer(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self._perform(self.core.timer(key))

    # -- the client side --------------------------------------------------------------------------------

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"session-{self.id}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        """Write the queued frames in order; frames queued together are sent corked, as one burst."""
        sock = self.client.get_extra_info("socket")
        while True:
            burst = [await self._outq.get()]
            while burst[-1] is not None and not self._outq.empty():
                burst.append(self._outq.get_nowait())
            with corked(sock, len(burst) > 1):
                for text in burst:
                    if text is None:
                        return
                    self._out_bytes -= jsonrpc.utf8_size(text)
                    try:
                        await self.client.send_str(text)
                    except (ConnectionError, RuntimeError):
                        return

    def _event(self, event: str, level: str = "info", **fields: Any) -> None:
        self.s.log.event(event, level, session=self.id, **fields)

    # -- life cycle -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Attach to an upstream, then relay client frames until the client goes away."""
        try:
            self._perform(self.core.start())
            if not await self._ready:
                await self.client.close(code=1013, message=b"no healthy upstream")
                return
            async for msg in self.client:
                if msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
                    await self._perform_waiting(self.core.client_frame(msg.data))
                elif msg.type == WSMsgType.ERROR:
                    self._event("ws.client_error", "warning", error=str(self.client.exception()))
                    break
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the links, stop every timer and task, and let the writer finish what is queued."""
        if self.closed:
            return
        self._perform(self.core.close())
        self.closed = True
        self._outq.put_nowait(None)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self.mover.aclose()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and task is not self._writer:
                task.cancel()
        for task in list(self._tasks):
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
