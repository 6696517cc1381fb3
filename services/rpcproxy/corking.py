"""Sending a burst of frames as one: Linux's ``TCP_CORK`` held around consecutive writes to one socket.

A relay under load has several frames ready for the same peer at once (the reader parsed a whole read's
worth). Written one by one, each frame is a segment of its own, and on loopback each send also runs the
peer's receive path and wakes it. Corked, the writes only queue; uncorking sends them as full segments.
Frames, their order and the loop's flow control are untouched: this changes when the kernel transmits.
Where the option is missing (not Linux) or the socket refuses it, writes go out as before.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

_CORK = getattr(socket, "TCP_CORK", None)


@contextlib.contextmanager
def corked(sock: Any, burst: bool) -> Iterator[None]:
    """Hold *sock*'s segments for the block when *burst* (more than one frame to write); then send them."""
    if not burst or sock is None or _CORK is None:
        yield
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
    except OSError:  # closed meanwhile, or not TCP
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)
