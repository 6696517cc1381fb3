"""One TCP transmission for a burst of WebSocket frames written in the same event-loop turn (TCP_CORK).

A session relays frames one at a time. When several go to the same peer in one turn (a client pipelining
requests, answers arriving together), each would be its own transmission and wake the peer once per
frame; on a loaded machine those wake-ups, not the bytes, are the cost. The first frame of a turn leaves
at once (a lone request gains no delay); from the second on the socket is corked, and at the end of the
turn it is uncorked, which sends everything held as one segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux; elsewhere frames leave one by one


class Coalescer:
    """Corks *sock* from the second write of a turn until the turn ends."""

    def __init__(self, sock: Any) -> None:
        usable = (
            _TCP_CORK is not None
            and sock is not None
            and sock.family in (socket.AF_INET, socket.AF_INET6)
            and sock.type == socket.SOCK_STREAM
        )
        self._sock = sock if usable else None
        self._writes = 0  # frames written in the current turn
        self._corked = False

    def before_write(self) -> None:
        """Call just before writing a frame."""
        if self._sock is None:
            return
        self._writes += 1
        if self._writes == 1:
            asyncio.get_running_loop().call_soon(self._end_turn)
        elif not self._corked:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
            except OSError:  # closed meanwhile: nothing left to coalesce
                return
            self._corked = True

    def _end_turn(self) -> None:
        self._writes = 0
        if self._corked:
            self._corked = False
            with contextlib.suppress(OSError):
                assert self._sock is not None and _TCP_CORK is not None
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)
