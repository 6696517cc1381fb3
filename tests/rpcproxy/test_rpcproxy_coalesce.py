"""The frame coalescer on a real loopback TCP connection: the first write of a turn is not held, later
ones are held only until the turn ends, and everything written arrives, in order."""

from __future__ import annotations

import asyncio
import socket

import pytest
from rpcproxy.coalesce import Coalescer

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux-only")


def corked(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK))


async def test_a_burst_is_held_until_the_turn_ends_and_arrives_whole_in_order() -> None:
    received = bytearray()
    done = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(received) < 300:
            chunk = await reader.read(1024)
            if not chunk:
                break
            received.extend(chunk)
        done.set()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        coalescer = Coalescer(sock)
        for turn in range(3):
            for frame in range(10):
                coalescer.before_write()
                writer.write(bytes([turn * 10 + frame]) * 10)
                assert corked(sock) == (frame > 0)  # the first write of a turn leaves at once
            await asyncio.sleep(0)  # the turn ends
            await asyncio.sleep(0)
            assert not corked(sock)
        async with asyncio.timeout(5):
            await done.wait()
        writer.close()
        await writer.wait_closed()
    assert bytes(received) == b"".join(bytes([i]) * 10 for i in range(30))


def test_sockets_it_cannot_cork_are_left_alone() -> None:
    a, b = socket.socketpair()  # a Unix socket: no TCP_CORK
    with a, b:
        coalescer = Coalescer(a)
        coalescer.before_write()  # no running loop needed: nothing is scheduled for it
        coalescer.before_write()
    Coalescer(None).before_write()
