"""A scripted HTTP/1.1 upstream on a real loopback socket (port 0), and a pool of the forwarder's client
pointed at it: the fixture of the upstream_http tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from rpcproxy.upstream_http import UpstreamPool

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Scripted:
    """A server answering each request with ``answer(n)`` (n counts requests over all connections)."""

    answer: Callable[[int], list[bytes]]
    close_after: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                for piece in self.answer(len(self.requests)):
                    writer.write(piece)
                    await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serve(answer: Callable[[int], list[bytes]], close_after: bool = False) -> AsyncIterator[Scripted]:
    scripted = Scripted(answer, close_after)
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scripted.url = f"http://127.0.0.1:{port}/rpc?x=1"
    async with server:
        yield scripted


@contextlib.asynccontextmanager
async def pool_for(
    scripted: Scripted, limit: int = 4, max_body: int = 1 << 20
) -> AsyncIterator[tuple[UpstreamPool, list[int]]]:
    opened = [0]

    def on_open() -> None:
        opened[0] += 1

    pool = UpstreamPool(scripted.url, limit=limit, keepalive=30.0, on_open=on_open, max_body=max_body)
    try:
        yield pool, opened
    finally:
        await pool.close()


HEADERS = [("Content-Type", "application/json")]
