"""One WebSocket connection from a client session to an upstream node, with its reader task.

Messages are handed, in arrival order, to the session's ``on_message``; when the connection ends for any
reason ``on_closed`` runs exactly once. The session owns everything else (ids, subscriptions, moves).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from rpcproxy.config import ProxyConfig, UpstreamSpec

_serial = itertools.count(1)


class LinkError(Exception):
    """The upstream WebSocket could not be opened or used."""


class UpstreamLink:
    """A live upstream WebSocket (identity-hashable: tables key on the link object)."""

    def __init__(self, spec: UpstreamSpec, ws: ClientConnection) -> None:
        self.spec = spec
        self.ws = ws
        self.serial = next(_serial)
        self.closed = False
        # replay-leak defect only: client request id (JSON text) -> [(subscription, future)] of replays
        self.leaked_replays: dict[str, list[tuple[Any, asyncio.Future[Any]]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def node(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<UpstreamLink #{self.serial} {self.node} closed={self.closed}>"

    @classmethod
    async def open(cls, spec: UpstreamSpec, config: ProxyConfig) -> UpstreamLink:
        """Connect and handshake within ``ws_connect_timeout``."""
        ping = config.ws_ping_interval or None
        try:
            ws = await connect(
                spec.ws_url,
                open_timeout=config.ws_connect_timeout,
                ping_interval=ping,
                ping_timeout=ping,
                close_timeout=1.0,
                max_size=config.ws_max_message_size,
                max_queue=64,
                compression=None,
                user_agent_header="rpcproxy",
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            raise LinkError(f"cannot open {spec.ws_url}: {type(exc).__name__}: {exc}") from None
        return cls(spec, ws)

    def start(
        self,
        on_message: Callable[[UpstreamLink, str | bytes], None],
        on_closed: Callable[[UpstreamLink], None],
    ) -> None:
        self._reader = asyncio.create_task(self._read(on_message, on_closed), name=f"upstream-{self}")

    async def _read(
        self,
        on_message: Callable[[UpstreamLink, str | bytes], None],
        on_closed: Callable[[UpstreamLink], None],
    ) -> None:
        try:
            async for message in self.ws:
                on_message(self, message)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            on_closed(self)

    async def send(self, text: str) -> None:
        """Send one frame; a dead connection raises ``LinkError`` (its reader reports the close)."""
        try:
            await self.ws.send(text)
        except ConnectionClosed as exc:
            raise LinkError(f"upstream {self.node} closed: {exc}") from None

    async def close(self) -> None:
        """Close (abort if the peer does not answer the close handshake) and wait for the reader."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 1.0)
        if self.ws.transport is not None:
            self.ws.transport.abort()
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
