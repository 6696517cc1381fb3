"""The asyncio side of a session's upstream links: opening and closing them, sending on them in order, and
the waits a move makes (the next health round, free routing). Each outcome goes back to the session core
as an event; the core decides what happens next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from rpcproxy.config import ProxyConfig
from rpcproxy.health import HealthMonitor
from rpcproxy.upstream_ws import LinkError, UpstreamLink
from rpcproxy.wsactions import Action, LinkRef
from rpcproxy.wscore import SessionCore


class MonitorHealth:
    """The health monitor as the session core reads it (node names, routing order)."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor

    def healthy(self, node: str) -> bool:
        return self.monitor.by_name[node].healthy

    def routable(self) -> list[str]:
        return [n.name for n in self.monitor.nodes if n.healthy]

    def pick(self, exclude: set[str]) -> str | None:
        node = self.monitor.pick(exclude)
        return node.name if node is not None else None

    def failback_target(self, current: str) -> str | None:
        node = self.monitor.failback_target(current)
        return node.name if node is not None else None


class Mover:
    """Owns one session's upstream links and the tasks that open, feed, close and wait for them.

    *perform* carries out the actions an event of *core* returned (the session's driver).
    """

    def __init__(
        self,
        config: ProxyConfig,
        monitor: HealthMonitor,
        core: SessionCore,
        perform: Callable[[list[Action]], None],
        name: str,
    ) -> None:
        self.cfg = config
        self.monitor = monitor
        self.core = core
        self.perform = perform
        self.name = name
        self.links: dict[LinkRef, UpstreamLink] = {}
        self.closed = False
        self._opening: set[LinkRef] = set()
        self._unwanted: set[LinkRef] = set()  # closed by the core while still opening
        self._backlog: dict[LinkRef, deque[str]] = {}  # frames waiting behind a send in progress
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.create_task(coro, name=f"session-{self.name}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- links ------------------------------------------------------------------------------------------

    def open(self, ref: LinkRef) -> None:
        self._opening.add(ref)
        self._spawn(self._open(ref), "move")

    async def _open(self, ref: LinkRef) -> None:
        try:
            link = await UpstreamLink.open(self.monitor.by_name[ref.node].spec, self.cfg)
        except LinkError as exc:
            self._opening.discard(ref)
            if not self.closed:
                self.perform(self.core.link_failed(ref, str(exc)))
            return
        self._opening.discard(ref)
        if self.closed or ref in self._unwanted:
            self._unwanted.discard(ref)
            await link.close()
            return
        self.links[ref] = link
        link.start(
            lambda _link, data: self.perform(self.core.upstream_frame(ref, data)),
            lambda _link: self._lost(ref),
        )
        self.perform(self.core.link_opened(ref))

    def _lost(self, ref: LinkRef) -> None:
        self.links.pop(ref, None)
        self.perform(self.core.link_lost(ref))

    def close(self, ref: LinkRef) -> None:
        if ref in self._opening:
            self._unwanted.add(ref)
            return
        link = self.links.get(ref)
        if link is not None:
            self._spawn(link.close(), "close")

    async def send(self, ref: LinkRef, text: str) -> None:
        """Send now (from a task that may wait for the socket), behind any frames already waiting."""
        backlog = self._backlog.get(ref)
        if backlog is not None:
            backlog.append(text)
            return
        link = self.links.get(ref)
        if link is not None:
            with contextlib.suppress(LinkError):  # the link's reader reports the close
                await link.send(text)

    def post(self, ref: LinkRef, text: str) -> None:
        """Send soon (from a callback that cannot wait), in order with every other frame of the link."""
        backlog = self._backlog.get(ref)
        if backlog is None:
            if ref not in self.links:
                return
            backlog = self._backlog[ref] = deque()
            self._spawn(self._pump(ref, backlog), "send")
        backlog.append(text)

    async def _pump(self, ref: LinkRef, backlog: deque[str]) -> None:
        try:
            while backlog:
                text = backlog.popleft()
                link = self.links.get(ref)
                if link is None:
                    break
                with contextlib.suppress(LinkError):
                    await link.send(text)
        finally:
            if self._backlog.get(ref) is backlog:
                del self._backlog[ref]

    # -- waits of a move --------------------------------------------------------------------------------

    def wait_round(self, within: float) -> None:
        self._spawn(self._wait_round(within), "move")

    async def _wait_round(self, within: float) -> None:
        await self.monitor.next_round(within)
        self.perform(self.core.round_passed())

    def wait_routing(self) -> None:
        self._spawn(self._wait_routing(), "move")

    async def _wait_routing(self) -> None:
        nodes = await self.monitor.routable()
        self.perform(self.core.routing_ready([n.name for n in nodes]))

    # -- life cycle -------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop every task and close every link, waiting for each."""
        self.closed = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for link in list(self.links.values()):
            await link.close()
        for task in list(self._tasks):
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
