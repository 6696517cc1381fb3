"""One WebSocket connection from a client session to an upstream node, with its reader task.

Messages are handed, in arrival order, to the session's ``on_message``; when the connection ends for any
reason ``on_closed`` runs exactly once. The session owns everything else (ids, subscriptions, moves).

The connection is aiohttp's client WebSocket (the same compiled frame reader and writer the client side
of the proxy uses): the relay is on every request's path, so its per-frame cost is the proxy's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from rpcproxy.config import ProxyConfig, UpstreamSpec

_serial = itertools.count(1)


class LinkError(Exception):
    """The upstream WebSocket could not be opened or used."""


class UpstreamLink:
    """A live upstream WebSocket (identity-hashable: tables key on the link object)."""

    def __init__(
        self, spec: UpstreamSpec, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse
    ) -> None:
        self.spec = spec
        self.ws = ws
        self.serial = next(_serial)
        self.closed = False
        # replay-leak defect only: client request id (JSON text) -> [(subscription, future)] of replays
        self.leaked_replays: dict[str, list[tuple[Any, asyncio.Future[Any]]]] = {}
        self._session = session
        self._reader: asyncio.Task[None] | None = None

    @property
    def node(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<UpstreamLink #{self.serial} {self.node} closed={self.closed}>"

    @classmethod
    async def open(cls, spec: UpstreamSpec, config: ProxyConfig) -> UpstreamLink:
        """Connect and handshake within ``ws_connect_timeout``.

        Keep-alive: a ping every ``ws_ping_interval``; no pong within half of it closes the link, so a
        stalled node (socket open, nothing coming back) is let go of rather than waited on.
        """
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, force_close=True),
            skip_auto_headers=("User-Agent",),
        )
        try:
            async with asyncio.timeout(config.ws_connect_timeout):
                ws = await session.ws_connect(
                    spec.ws_url,
                    heartbeat=config.ws_ping_interval or None,
                    max_msg_size=config.ws_max_message_size,
                    compress=0,
                    autoclose=True,
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
                    headers={"User-Agent": "rpcproxy"},
                )
        except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as exc:
            await session.close()
            raise LinkError(f"cannot open {spec.ws_url}: {type(exc).__name__}: {exc}") from None
        except BaseException:
            await session.close()
            raise
        return cls(spec, session, ws)

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
        ws = self.ws
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                    on_message(self, msg.data)
                else:  # CLOSE, CLOSING, CLOSED, ERROR (a protocol error or a missed pong)
                    break
        except (aiohttp.ClientError, OSError, RuntimeError):
            pass
        finally:
            self.closed = True
            on_closed(self)
            with contextlib.suppress(Exception):
                await self._release()

    async def _release(self) -> None:
        """Close the WebSocket (abort if the peer does not answer the close handshake) and its session."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 1.0)
        await self._session.close()  # closes (aborts) the connection if the handshake did not
        # aiohttp 3.14 can re-arm the heartbeat of a closed WebSocket (a reset scheduled as bytes arrived runs
        # after the close); the timer then holds the link, its session and connector for up to
        # ws_ping_interval. Disarm it (a private method: if aiohttp renames it, this does nothing).
        disarm = getattr(self.ws, "_cancel_heartbeat", None)
        if disarm is not None:
            disarm()

    async def send(self, text: str) -> None:
        """Send one frame; a dead connection raises ``LinkError`` (its reader reports the close)."""
        if self.ws.closed:
            raise LinkError(f"upstream {self.node} closed")
        try:
            await self.ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise LinkError(f"upstream {self.node} closed: {exc}") from None

    async def close(self) -> None:
        """Close (abort if the peer does not answer the close handshake) and wait for the reader."""
        with contextlib.suppress(Exception):
            await self._release()
        if self._reader is not None and self._reader is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
