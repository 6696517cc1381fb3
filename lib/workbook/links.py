"""Fault links: TCP proxies that every connection of a topology can go through, so network faults are real.

Each :class:`Link` listens on ``127.0.0.1:0`` and forwards to its target (``"HOST:PORT"`` or a callable
resolved at each new connection, so a link follows a restarted target and keeps its own address).
Faults: :meth:`Link.cut` (new connections are reset at once, open ones get a TCP RST), :meth:`Link.blackhole`
(accept and hold, forward nothing, never reset: a hung peer), :meth:`Link.delay` (fixed and jittered, per
direction, byte order kept), :meth:`Link.drop` (discard one direction's bytes, connection stays open),
:meth:`Link.reset` (RST open connections once) and :meth:`Link.heal`.

All links of a :class:`Links` run on ONE background thread with its own event loop, so synchronous client
code in the same process (a blocking gRPC call through a link) never deadlocks against them. Control
methods are thread-safe and have taken effect when they return. ``up`` is client → target, ``down`` is
target → client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from workbook._exceptions import FaultLinkError, WorkbookError

Target = str | tuple[str, int] | Callable[[], "str | tuple[str, int]"]
DIRECTIONS = ("up", "down")
_CHUNK = 65536
_QUEUE_CHUNKS = 64




def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise FaultLinkError(f"direction must be 'up', 'down' or 'both', not {direction!r}")


def _split(addr: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise FaultLinkError(f"target must be HOST:PORT, not {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close *writer*'s socket with a TCP RST (SO_LINGER 0) instead of a FIN."""
    if writer is None:
        return
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Conn:
    """One proxied connection: the client side, the upstream side, and the pump tasks between them."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def reset(self) -> None:
        if self.closed:
            return
        self.closed = True
        _rst(self.client)
        _rst(self.upstream)
        for task in self.tasks:
            task.cancel()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()
        for task in self.tasks:
            task.cancel()


class Link:
    """One TCP link ``address`` → target with fault controls; create it with :meth:`Links.add`."""

    def __init__(self, links: Links, name: str, target: Target, between: tuple[str, str] | None) -> None:
        self._links = links
        self.name = name
        self._target = target
        self.between = between
        self.address = ""
        self.mode = "open"  # "open" | "cut" | "blackhole"
        self.delays: dict[str, tuple[float, float]] = {d: (0.0, 0.0) for d in DIRECTIONS}
        self.dropping: dict[str, bool] = dict.fromkeys(DIRECTIONS, False)
        self.connections_total = 0
        self.refused = 0
        self.bytes: dict[str, int] = dict.fromkeys(DIRECTIONS, 0)
        self.dropped: dict[str, int] = dict.fromkeys(DIRECTIONS, 0)
        self._conns: set[_Conn] = set()
        self._server: asyncio.base_events.Server | None = None
        self._changed: asyncio.Event | None = None

    # --- loop-thread internals -------------------------------------------------------------------
    async def _start(self) -> None:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            assert self._changed is not None
            await self._changed.wait()

    def _resolve(self) -> tuple[str, int]:
        target = self._target() if callable(self._target) else self._target
        return _split(target)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self.connections_total += 1
        self._conns.add(conn)
        try:
            if self.mode == "cut":
                self.refused += 1
                conn.reset()
                return
            await self._until(lambda: self.mode == "open" or conn.closed)  # blackhole: hold, no reset
            if conn.closed:
                return
            try:
                host, port = self._resolve()
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except (OSError, WorkbookError, KeyError, ValueError, RuntimeError):  # target not up yet: refuse
                self.refused += 1
                conn.reset()
                return
            conn.upstream = up_writer
            if conn.closed:  # cut while we were connecting
                _rst(up_writer)
                return
            conn.tasks = [asyncio.ensure_future(self._pump(conn, "up", reader, up_writer)),
                          asyncio.ensure_future(self._pump(conn, "down", up_reader, writer))]
            await asyncio.wait(conn.tasks)
            conn.close()
        finally:
            self._conns.discard(conn)

    async def _pump(self, conn: _Conn, direction: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Read one direction and forward it: directly when nothing is delayed or queued, else through a
        delivery task that applies delay and blackhole in order."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(_QUEUE_CHUNKS)
        queued = [0]  # chunks handed to the delivery task and not yet written
        deliver = asyncio.ensure_future(self._deliver(conn, direction, chunks, writer, queued))
        last_at = 0.0
        try:
            while True:
                await self._until(lambda: self.mode != "blackhole" or conn.closed)
                try:
                    data = await reader.read(_CHUNK)
                except (OSError, RuntimeError):
                    conn.reset()  # the peer reset us: pass the reset on
                    return
                if not data:
                    queued[0] += 1
                    await chunks.put((last_at, None))
                    break
                if self.dropping[direction]:
                    self.dropped[direction] += len(data)
                    continue
                delay, jitter = self.delays[direction]
                if jitter:
                    delay = max(0.0, delay + self._links._random.uniform(-jitter, jitter))
                if delay == 0 and queued[0] == 0 and self.mode == "open":
                    try:  # fast path: nothing ahead of this chunk
                        writer.write(data)
                        await writer.drain()
                    except (OSError, RuntimeError):
                        conn.reset()
                        return
                    self.bytes[direction] += len(data)
                    continue
                last_at = max(loop.time() + delay, last_at)  # jitter never reorders bytes
                queued[0] += 1
                await chunks.put((last_at, data))
            await deliver
        finally:
            if not deliver.done():
                deliver.cancel()

    async def _deliver(self, conn: _Conn, direction: str, chunks: asyncio.Queue[tuple[float, bytes | None]],
                       writer: asyncio.StreamWriter, queued: list[int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            at, data = await chunks.get()
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._until(lambda: self.mode != "blackhole" or conn.closed)
            if conn.closed:
                return
            try:
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except (OSError, RuntimeError):
                conn.reset()
                return
            finally:
                queued[0] -= 1
            self.bytes[direction] += len(data)

    def _apply(self, fn: Callable[[], Any]) -> Any:
        def run() -> Any:
            result = fn()
            self._notify()
            return result

        return self._links._call(run)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.reset()
        if self._server is not None:
            await self._server.wait_closed()

    # --- controls (any thread) --------------------------------------------------------------------
    def cut(self) -> None:
        """Reset open connections (RST) and reset every new one at once, until :meth:`heal`."""

        def apply() -> None:
            self.mode = "cut"
            for conn in list(self._conns):
                conn.reset()

        self._apply(apply)

    def blackhole(self) -> None:
        """Accept and hold: new and open connections stay open but nothing is forwarded (no reset)."""

        def apply() -> None:
            self.mode = "blackhole"

        self._apply(apply)

    def delay(self, seconds: float, jitter: float = 0.0, direction: str = "both") -> None:
        """Delay every chunk by *seconds* ± *jitter* (uniform) in *direction*; bytes keep their order."""
        if seconds < 0 or jitter < 0:
            raise FaultLinkError(f"delay and jitter must be >= 0, got {seconds}, {jitter}")
        dirs = _directions(direction)

        def apply() -> None:
            for d in dirs:
                self.delays[d] = (float(seconds), float(jitter))

        self._apply(apply)

    def drop(self, direction: str = "both") -> None:
        """Discard the bytes sent in *direction*; connections stay open."""
        dirs = _directions(direction)

        def apply() -> None:
            for d in dirs:
                self.dropping[d] = True

        self._apply(apply)

    def reset(self) -> None:
        """RST every open connection once; new connections are accepted as before."""

        def apply() -> None:
            for conn in list(self._conns):
                conn.reset()

        self._apply(apply)

    def heal(self) -> None:
        """Back to a plain link: no cut, blackhole, delay or drop (held data flows on)."""

        def apply() -> None:
            self.mode = "open"
            for d in DIRECTIONS:
                self.delays[d] = (0.0, 0.0)
                self.dropping[d] = False

        self._apply(apply)

    def retarget(self, target: Target) -> None:
        """Send new connections to *target* (open ones are left alone)."""

        def apply() -> None:
            self._target = target

        self._apply(apply)

    # --- state ------------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """The target a new connection would go to now."""
        host, port = self._links._call(self._resolve)
        return f"{host}:{port}"

    @property
    def open_connections(self) -> int:
        return self._links._call(lambda: len(self._conns))

    @property
    def bytes_up(self) -> int:
        return self.bytes["up"]

    @property
    def bytes_down(self) -> int:
        return self.bytes["down"]

    def stats(self) -> dict[str, Any]:
        """Name, address, state and counters, as one table row."""

        def collect() -> dict[str, Any]:
            return {
                "link": self.name, "address": self.address,
                "between": "↔".join(self.between) if self.between else "",
                "mode": self.mode, "delay_up": self.delays["up"][0], "delay_down": self.delays["down"][0],
                "drop_up": self.dropping["up"], "drop_down": self.dropping["down"],
                "open": len(self._conns), "connections": self.connections_total, "refused": self.refused,
                "bytes_up": self.bytes["up"], "bytes_down": self.bytes["down"],
                "dropped_up": self.dropped["up"], "dropped_down": self.dropped["down"],
            }

        return self._links._call(collect)

    def __repr__(self) -> str:
        return f"<Link {self.name} {self.address} {self.mode}>"


class Links:
    """The fault links of a run, all served by one background event-loop thread."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)
        self._links: dict[str, Link] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="workbook-links", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run *fn* on the links thread and return its result (directly if already there)."""
        if threading.current_thread() is self._thread:
            return fn()
        if self._closed:
            raise FaultLinkError("links are closed")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return fut.result()

    def _run(self, coro: Any) -> Any:
        if threading.current_thread() is self._thread:
            raise FaultLinkError("cannot wait for the links thread from inside it")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def add(self, name: str, target: Target, *, between: tuple[str, str] | None = None) -> Link:
        """A new link *name* on 127.0.0.1:0 forwarding to *target*; *between* = (client node, server node)."""
        with self._lock:
            if self._closed:
                raise FaultLinkError("links are closed")
            if name in self._links:
                raise FaultLinkError(f"link {name!r} exists already")
            if between is not None and len(between) != 2:
                raise FaultLinkError(f"between must name two nodes, got {between!r}")
            link = Link(self, name, target, tuple(between) if between else None)
            self._run(link._start())
            self._links[name] = link
            return link

    def __getitem__(self, name: str) -> Link:
        return self._links[name]

    def __iter__(self) -> Iterator[Link]:
        return iter(list(self._links.values()))

    def __len__(self) -> int:
        return len(self._links)

    def of(self, node: str) -> list[Link]:
        """Every link with *node* at either end."""
        return [link for link in self if link.between and node in link.between]

    def cut(self, node: str) -> list[Link]:
        """Cut every link to or from *node*; returns them."""
        links = self.of(node)
        for link in links:
            link.cut()
        return links

    def partition(self, *groups: Iterable[str]) -> list[Link]:
        """Cut every link whose two ends are in different *groups*; links within a group are untouched."""
        where: dict[str, int] = {}
        for index, group in enumerate(groups):
            for node in group:
                if node in where:
                    raise FaultLinkError(f"node {node!r} is in two groups of the partition")
                where[node] = index
        cut = []
        for link in self:
            if link.between is None:
                continue
            a, b = (where.get(node) for node in link.between)
            if a is not None and b is not None and a != b:
                link.cut()
                cut.append(link)
        return cut

    def heal(self, node: str | None = None) -> None:
        """Heal every link (or every link of *node*)."""
        for link in (self if node is None else self.of(node)):
            link.heal()

    def stats(self) -> list[dict[str, Any]]:
        """One row per link (``pandas.DataFrame(run.links.stats())``)."""
        return [link.stats() for link in self]

    def close(self) -> None:
        """Close every link and connection, stop the loop and join its thread."""
        with self._lock:
            if self._closed:
                return
            links = list(self._links.values())

            async def shutdown() -> None:
                for link in links:
                    await link._close()
                current = asyncio.current_task()
                pending = [t for t in asyncio.all_tasks() if t is not current]
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

            try:
                self._run(shutdown())
            finally:
                self._closed = True
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()

    def __enter__(self) -> Links:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
