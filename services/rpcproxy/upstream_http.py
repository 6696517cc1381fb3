"""The forwarder's HTTP/1.1 client: per upstream, a pool of keep-alive connections, one request at a time.

Each forwarded request is one write (head and body together) and one response read. A general-purpose
client (aiohttp's) spent more CPU per request than the node answering it; this one does only what the
forwarder needs, on asyncio protocols: bodies by Content-Length, chunked, or delimited by the close, up
to a size limit; interim (1xx) responses skipped; a transfer coding other than chunked refused (the body
would be forwarded still coded); a connection is reused only after a complete, keep-alive response whose
framing was unambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 65536  # bytes of status line and headers, with the blank line that ends them
MAX_CHUNK_LINE = 4096  # bytes of a chunk-size line (with its extensions and CRLF)
DEFAULT_MAX_BODY = 64 * 1024 * 1024


class UpstreamHttpError(Exception):
    """The upstream's answer was not a well-formed HTTP/1.1 response (or ended before it was complete)."""


class ResponseTooLarge(UpstreamHttpError):
    """The upstream's response body is larger than the limit; the connection is not reused."""


@dataclass
class Reply:
    """One upstream response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Response:
    """Incremental parse state of the response being read."""

    __slots__ = ("chunks", "headers", "keep_alive", "length", "mode", "pos", "received", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = True
        self.mode = ""  # "" (head not read yet), "length", "chunked", "close"
        self.length = 0
        self.pos = 0  # parse position in the connection's buffer
        self.chunks: list[bytes] = []
        self.received = 0  # body bytes of the chunks read so far


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream."""

    def __init__(self, on_lost: Callable[[Connection], None], max_body: int = DEFAULT_MAX_BODY) -> None:
        self.transport: asyncio.Transport | None = None
        self.max_body = max_body
        self.closed = False
        self.idle_since = 0.0
        self._on_lost = on_lost
        self._buf = bytearray()
        self._eof = False
        self._resp: _Response | None = None
        self._waiter: asyncio.Future[tuple[Reply, bool]] | None = None

    # -- protocol callbacks -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is not None:
            self._advance()

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiter is not None:
            self._advance()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        orderly = exc is None or self._eof  # a FIN (or our own close) may end a body; a reset never does
        self._eof = True
        if self._waiter is not None and orderly:
            self._advance()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                ConnectionResetError(f"upstream closed the connection before a complete response ({exc})")
            )
        self._on_lost(self)

    # -- use --------------------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, and nothing unread from it (a keep-alive connection must be silent between requests)."""
        return (
            not self.closed
            and not self._eof
            and not self._buf
            and self.transport is not None
            and not self.transport.is_closing()
        )

    async def exchange(self, data: bytes) -> tuple[Reply, bool]:
        """Write one request, return (the response, whether the connection may be reused)."""
        if not self.usable or self.transport is None:
            raise ConnectionResetError("upstream connection is closed")
        self._resp = _Response()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
            return await self._waiter
        finally:
            self._waiter = None
            self._resp = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- parsing ----------------------------------------------------------------------------------------

    def _advance(self) -> None:
        waiter, r = self._waiter, self._resp
        if waiter is None or waiter.done() or r is None:
            return
        try:
            result = self._parse(r)
        except UpstreamHttpError as exc:
            waiter.set_exception(exc)
            return
        if result is not None:
            waiter.set_result(result)

    def _parse(self, r: _Response) -> tuple[Reply, bool] | None:
        buf = self._buf
        while not r.mode:  # the head (skipping interim 1xx responses)
            end = buf.find(b"\r\n\r\n", r.pos)
            # The limit counts the whole head, so that it is refused however its bytes were split.
            if (end + 4 if end >= 0 else len(buf)) - r.pos > MAX_HEAD:
                raise UpstreamHttpError("response head too large")
            if end < 0:
                if self._eof:
                    raise UpstreamHttpError("upstream closed the connection before a complete response")
                return None
            self._head(r, bytes(buf[r.pos : end]))
            r.pos = end + 4
        if r.mode == "length":
            if r.length > self.max_body:
                raise ResponseTooLarge(
                    f"response body of {r.length} bytes exceeds the limit of {self.max_body}"
                )
            end = r.pos + r.length
            if len(buf) < end:
                if self._eof:
                    raise UpstreamHttpError("upstream closed the connection in the middle of a body")
                return None
            return self._done(r, bytes(buf[r.pos : end]), end)
        if r.mode == "chunked":
            return self._chunked(r)
        if len(buf) - r.pos > self.max_body:
            raise ResponseTooLarge(f"response body exceeds the limit of {self.max_body} bytes")
        if not self._eof:  # body delimited by the end of the connection
            return None
        return self._done(r, bytes(buf[r.pos :]), len(buf))

    def _head(self, r: _Response, head: bytes) -> None:
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        parts = lines[0].split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        if not parts[0].startswith("HTTP/1.") or len(code) != 3 or not (code.isascii() and code.isdigit()):
            raise UpstreamHttpError(f"bad status line {lines[0][:80]!r}")
        status = int(code)
        headers: list[tuple[str, str]] = []
        length: int | None = None
        encodings: str | None = None
        connection = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise UpstreamHttpError(f"bad header line {line[:80]!r}")
            value = value.strip(" \t")  # OWS only: str.strip() would also eat obs-text such as NBSP
            headers.append((name, value))
            lower = name.lower()
            if lower == "content-length":
                if not (value.isascii() and value.isdigit()) or (length is not None and int(value) != length):
                    raise UpstreamHttpError(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif lower == "transfer-encoding":
                encodings = value.lower() if encodings is None else f"{encodings},{value.lower()}"
            elif lower == "connection":
                connection += "," + value.lower()
        if 100 <= status < 200:
            return  # interim response: the real one follows
        tokens = {t.strip() for t in connection.split(",")}
        r.keep_alive = "close" not in tokens and (parts[0] == "HTTP/1.1" or "keep-alive" in tokens)
        r.status, r.headers = status, headers
        if status in (204, 304):
            r.mode, r.length = "length", 0
        elif encodings is not None:
            codings = [c.strip() for c in encodings.split(",") if c.strip()]
            if codings != ["chunked"]:
                # Transfer-Encoding is hop-by-hop: forwarding a gzip-coded body without it would corrupt it.
                raise UpstreamHttpError(f"unsupported transfer coding {encodings[:40]!r} (only chunked)")
            r.mode = "chunked"
            # With a Content-Length too, the framing is ambiguous (RFC 9112 6.3): read as chunked, then close.
            r.keep_alive = r.keep_alive and length is None
        elif length is not None:
            r.mode, r.length = "length", length
        else:
            r.mode, r.keep_alive = "close", False

    def _chunked(self, r: _Response) -> tuple[Reply, bool] | None:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n", r.pos)
            if (end + 2 if end >= 0 else len(buf)) - r.pos > MAX_CHUNK_LINE:
                raise UpstreamHttpError("chunk size line too long")
            if end < 0:
                break
            size_text = bytes(buf[r.pos : end]).split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise UpstreamHttpError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if r.received + size > self.max_body:  # refused before the chunk is waited for
                raise ResponseTooLarge(f"chunked response body exceeds the limit of {self.max_body} bytes")
            if size == 0:  # last chunk: trailers (ignored) up to an empty line
                stop = buf.find(b"\r\n\r\n", end)
                if stop >= 0:
                    return self._done(r, b"".join(r.chunks), stop + 4)
                break
            data_end = end + 2 + size
            if len(buf) < data_end + 2:
                break
            if buf[data_end : data_end + 2] != b"\r\n":
                raise UpstreamHttpError("chunk not followed by CRLF")
            r.chunks.append(bytes(buf[end + 2 : data_end]))
            r.received += size
            r.pos = data_end + 2
        if self._eof:
            raise UpstreamHttpError("upstream closed the connection in the middle of a chunked body")
        return None

    def _done(self, r: _Response, body: bytes, end: int) -> tuple[Reply, bool]:
        del self._buf[:end]
        reusable = r.keep_alive and not self._buf and not self._eof
        return Reply(r.status, r.headers, body), reusable


class UpstreamPool:
    """Keep-alive connections to one upstream URL: at most *limit* open, idle ones reused newest first."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        keepalive: float,
        on_open: Callable[[], None],
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.authority = parts.netloc.rpartition("@")[2]
        self.limit = limit
        self.keepalive = keepalive
        self.max_body = max_body
        self._on_open = on_open
        self._idle: deque[Connection] = deque()
        self._open = 0  # connections counted against the limit (in use or idle)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._all: set[Connection] = set()

    @property
    def idle(self) -> int:
        """Open connections waiting for a request."""
        return len(self._idle)

    @property
    def open(self) -> int:
        """Connections counted against the limit: in use, being opened, or idle."""
        return self._open

    @property
    def connections(self) -> int:
        """Connections this pool has open now (pooled or fresh)."""
        return len(self._all)

    def encode(self, headers: Iterable[tuple[str, str]], body: bytes, *, close: bool = False) -> bytes:
        """The request's bytes: POST to the upstream's path, *headers* (already stripped of hop-by-hop ones),
        Host and Content-Length of our own."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.authority}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if close:
            lines.append("Connection: close")
        lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + body

    async def post(self, headers: Iterable[tuple[str, str]], body: bytes) -> Reply:
        """One request on a pooled connection (opened if none is idle and the limit allows)."""
        data = self.encode(headers, body)
        conn = await self._acquire()
        reusable = False
        try:
            reply, reusable = await conn.exchange(data)
            return reply
        finally:
            self._release(conn, reusable)

    async def post_fresh(self, headers: Iterable[tuple[str, str]], body: bytes) -> Reply:
        """One request on a connection of its own, closed right after (no pooling)."""
        conn = await self._connect(pooled=False)
        try:
            reply, _ = await conn.exchange(self.encode(headers, body, close=True))
            return reply
        finally:
            conn.close()

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()

    # -- pool -------------------------------------------------------------------------------------------

    async def _connect(self, *, pooled: bool) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: Connection(self._lost if pooled else self._forget, self.max_body),
            self.host,
            self.port,
            ssl=self.ssl,
            server_hostname=self.host if self.ssl else None,
        )
        self._all.add(conn)
        self._on_open()
        return conn

    async def _acquire(self) -> Connection:
        while True:
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()
                if conn.usable and now - conn.idle_since < self.keepalive:
                    return conn
                self._discard(conn)
            if self._open < self.limit:
                self._open += 1
                try:
                    return await self._connect(pooled=True)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass on the turn this waiter was given
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise

    def _release(self, conn: Connection, reusable: bool) -> None:
        if reusable and conn.usable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._wake()
        else:
            self._discard(conn)

    def _discard(self, conn: Connection) -> None:
        """Close *conn* and free its place under the limit (once, however often it is called)."""
        if conn in self._all:
            self._all.discard(conn)
            self._open -= 1
            self._wake()
        conn.close()

    def _lost(self, conn: Connection) -> None:
        """A pooled connection ended: if it was idle, it no longer holds a place."""
        if conn in self._idle:
            self._idle.remove(conn)
            self._discard(conn)

    def _forget(self, conn: Connection) -> None:
        self._all.discard(conn)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
