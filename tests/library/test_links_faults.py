"""Fault links: forwarding, cut, blackhole, delay, drop, reset, heal, partition, following a restart."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from workbook import FaultLinkError
from workbook.links import Link, Links
from workbook.run import Run
from workbook.service import Service
from workbook.waiting import wait_until_sync


@pytest.fixture
def echo(run: Run, tiny: list[str]) -> Service:
    return run.start("echo", tiny)


def connect(link: Link, timeout: float = 5.0) -> socket.socket:
    host, port = link.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def assert_reset(sock: socket.socket) -> None:
    """The connection errors at once (RST), well before the socket's own 5 s timeout."""
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(3):
            sock.sendall(b"x")
            if sock.recv(10) == b"":
                raise AssertionError("got an orderly close (FIN), expected a reset")


def assert_new_connection_reset(link: Link) -> None:
    """A new connection through *link* is reset at once (during the handshake's aftermath or first I/O)."""
    try:
        sock = connect(link)
    except ConnectionResetError:
        return  # the RST beat connect()'s own completion check: still "errors at once"
    with sock:
        assert_reset(sock)


def wait_for(predicate, timeout: float = 5.0) -> None:
    wait_until_sync(predicate, timeout, "the link's state", poll=0.005)


def test_link_forwards_and_counts(run: Run, echo: Service) -> None:
    link = run.links.add("c->echo", echo.info["echo"], between=("c", "echo"))
    assert link.address != echo.info["echo"]
    with connect(link) as sock:
        assert roundtrip(sock, b"hello" * 1000) == b"hello" * 1000
        assert link.open_connections == 1
    wait_for(lambda: link.open_connections == 0)
    stats = link.stats()
    assert stats["bytes_up"] == stats["bytes_down"] == 5000
    assert stats["connections"] == 1


def test_cut_resets_open_and_new_connections_at_once_and_heal_restores(run: Run, echo: Service) -> None:
    link = run.links.add("l", echo.info["echo"])
    sock = connect(link)
    assert roundtrip(sock, b"ping") == b"ping"
    link.cut()
    assert_reset(sock)
    sock.close()
    assert_new_connection_reset(link)
    link.heal()
    with connect(link) as healed:
        assert roundtrip(healed, b"back") == b"back"


def test_blackhole_hangs_without_reset_and_heal_releases_held_data(run: Run, echo: Service) -> None:
    link = run.links.add("l", echo.info["echo"])
    old = connect(link, timeout=0.3)
    assert roundtrip(old, b"a") == b"a"
    link.blackhole()
    new = connect(link, timeout=0.3)  # the handshake completes: a hung peer's kernel still accepts
    for sock in (old, new):
        sock.sendall(b"held")
        with pytest.raises(TimeoutError):  # neither data nor reset: the caller just hangs
            sock.recv(10)
    assert link.stats()["bytes_up"] == 1
    link.heal()
    for sock in (old, new):
        sock.settimeout(5)
        got = b""
        while len(got) < 4:
            got += sock.recv(10)
        assert got == b"held"
        sock.close()


def test_delay_is_applied_per_direction(run: Run, echo: Service) -> None:
    link = run.links.add("l", echo.info["echo"])
    with connect(link) as sock:
        link.delay(0.15, direction="up")
        t0 = time.monotonic()
        assert roundtrip(sock, b"x") == b"x"
        one_way = time.monotonic() - t0
        link.delay(0.15, direction="both")
        t0 = time.monotonic()
        assert roundtrip(sock, b"y") == b"y"
        both_ways = time.monotonic() - t0
    assert one_way >= 0.15
    assert both_ways >= 0.30


def test_jitter_keeps_byte_order(run: Run, echo: Service) -> None:
    link = run.links.add("l", echo.info["echo"])
    link.delay(0.002, jitter=0.002)
    with connect(link) as sock:
        sent = b""
        for i in range(200):
            piece = f"{i:05d};".encode()
            sock.sendall(piece)
            sent += piece
        got = b""
        while len(got) < len(sent):
            got += sock.recv(65536)
    assert got == sent


def test_drop_discards_one_direction_and_keeps_the_connection(run: Run, echo: Service) -> None:
    link = run.links.add("l", echo.info["echo"])
    with connect(link, timeout=0.3) as sock:
        assert roundtrip(sock, b"a") == b"a"
        link.drop("up")
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert link.stats()["dropped_up"] == 4
        link.heal()
        sock.settimeout(5)
        assert roundtrip(sock, b"kept") == b"kept"


def test_reset_hits_open_connections_once(run: Run, echo: Service) -> None:
    link = run.links.add("l", echo.info["echo"])
    sock = connect(link)
    assert roundtrip(sock, b"a") == b"a"
    link.reset()
    assert_reset(sock)
    sock.close()
    with connect(link) as again:
        assert roundtrip(again, b"b") == b"b"


def test_link_follows_a_restarted_target(run: Run, echo: Service) -> None:
    link = run.links.add("l", lambda: echo.info["echo"])
    before = echo.info["echo"]
    with connect(link) as sock:
        assert roundtrip(sock, b"1") == b"1"
    echo.restart()
    assert echo.info["echo"] != before  # the fixture's echo port is not pinned: the link must follow
    with connect(link) as sock:
        assert roundtrip(sock, b"2") == b"2"


def test_unreachable_target_looks_refused(run: Run, echo: Service) -> None:
    link = run.links.add("l", echo.info["echo"])
    echo.kill()
    assert_new_connection_reset(link)


def test_partition_cuts_exactly_the_links_between_groups(run: Run, echo: Service) -> None:
    links = run.links
    nodes = ["kv1", "kv2", "kv3"]
    for a in nodes:
        for b in nodes:
            if a != b:
                links.add(f"{a}->{b}", echo.info["echo"], between=(a, b))
    cut = links.partition({"kv1", "kv2"}, {"kv3"})
    assert sorted(link.name for link in cut) == ["kv1->kv3", "kv2->kv3", "kv3->kv1", "kv3->kv2"]
    assert {link.name: link.mode for link in links} == {
        "kv1->kv2": "open", "kv2->kv1": "open", "kv1->kv3": "cut", "kv2->kv3": "cut",
        "kv3->kv1": "cut", "kv3->kv2": "cut"}
    assert_new_connection_reset(links["kv1->kv3"])
    with connect(links["kv1->kv2"]) as sock:
        assert roundtrip(sock, b"ok") == b"ok"
    links.heal("kv3")
    assert all(link.mode == "open" for link in links)
    assert [link.name for link in links.cut("kv1")] == ["kv1->kv2", "kv1->kv3", "kv2->kv1", "kv3->kv1"]
    links.heal()
    assert all(link.mode == "open" for link in links)
    with pytest.raises(FaultLinkError, match="two groups"):
        links.partition({"kv1"}, {"kv1", "kv2"})


def test_bad_controls_are_rejected() -> None:
    with Links() as links:
        link = links.add("l", "127.0.0.1:1")
        with pytest.raises(FaultLinkError, match="direction"):
            link.delay(0.1, direction="sideways")
        with pytest.raises(FaultLinkError, match=">= 0"):
            link.delay(-1)
        with pytest.raises(FaultLinkError, match="exists"):
            links.add("l", "127.0.0.1:1")


def test_close_joins_the_thread_and_frees_the_port(echo: Service) -> None:
    links = Links()
    link = links.add("l", echo.info["echo"])
    sock = connect(link)
    assert roundtrip(sock, b"a") == b"a"
    links.close()
    assert not links._thread.is_alive()
    host, port = link.address.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()
    sock.close()


async def test_async_clients_and_controls_share_a_loop_without_deadlock(run: Run, echo: Service) -> None:
    # A notebook's event loop drives clients while it calls the (blocking, quick) controls.
    link = run.links.add("l", echo.info["echo"])
    host, port = link.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    link.delay(0.05)
    writer.write(b"slow")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"slow"
    link.cut()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(10), 5)
    writer.close()
