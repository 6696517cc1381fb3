"""The forwarder's HTTP/1.1 client: per upstream, a pool of keep-alive connections, one request at a time.

Each forwarded request is one write (head and body together) and one response read. A general-purpose
client (aiohttp's) spent more CPU per request than the node answering it; this one does only what the
forwarder needs, on asyncio protocols, and leaves the parsing to llhttp (httptools, as uvicorn uses): one
parser per connection. Around it: bodies by Content-Length, chunked, or delimited by the close (a FIN, never
a reset), up to a size limit; the head up to MAX_HEAD however its bytes are split; interim (1xx) responses
skipped; a transfer coding other than chunked refused (the body would be forwarded still coded); a
connection is reused only after a complete, keep-alive response whose framing was unambiguous and after
which nothing more arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

MAX_HEAD = 65536  # bytes of status line and headers, with the blank line that ends them
DEFAULT_MAX_BODY = 64 * 1024 * 1024
_HEAD_END = b"\r\n\r\n"
_VERSION = b"HTTP/1."  # how a head starts (llhttp refuses HTTP/1.x other than 1.0 and 1.1)
_FRAMING_LENGTHS = frozenset(map(len, ("content-length", "transfer-encoding", "connection")))


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
    """What the parser has reported of the response being read (an interim 1xx one is forgotten)."""

    __slots__ = (
        "body",
        "close_delimited",
        "complete",
        "extra",
        "final",
        "headers",
        "keep_alive",
        "raw",
        "received",
        "reusable",
        "status",
    )

    def __init__(self) -> None:
        self.status = 0
        self.raw: list[tuple[bytes, bytes]] = []  # header fields as the parser gave them
        self.headers: list[tuple[str, str]] = []
        self.final = False  # the final (non-1xx) response's head has been read
        self.keep_alive = False
        self.close_delimited = False  # the body ends with the connection
        self.body: list[bytes] = []
        self.received = 0  # body bytes so far
        self.complete = False
        self.extra = False  # something followed the complete response
        self.reusable = False


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an upstream, with its response parser (llhttp's, reused while the
    connection is)."""

    def __init__(self, on_lost: Callable[[Connection], None], max_body: int = DEFAULT_MAX_BODY) -> None:
        self.transport: asyncio.Transport | None = None
        self.max_body = max_body
        self.closed = False
        self.idle_since = 0.0
        self._on_lost = on_lost
        self._eof = False
        self._stray = False  # bytes arrived that no exchange was waiting for
        self._broken = False  # the parser is not at the start of a response: never reused
        self._parser = httptools.HttpResponseParser(self)
        # Content-Length with chunked (RFC 9112 6.3): read as chunked (and not reused) rather than refused;
        # whitespace before a chunk extension's ";" (RFC 9112 7.1.1 BWS) read rather than refused.
        self._parser.set_dangerous_leniencies(
            lenient_chunked_length=True, lenient_spaces_after_chunk_size=True
        )
        self._in_head = True  # the next bytes belong to a head, whose end is found here (for MAX_HEAD)
        self._head = bytearray()  # bytes of a head whose end has not arrived yet
        self._resp: _Response | None = None
        self._waiter: asyncio.Future[tuple[Reply, bool]] | None = None

    # -- protocol callbacks -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP (or TLS) transport: uvloop's is one without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter, r = self._waiter, self._resp
        if waiter is None or r is None or waiter.done():
            self._stray = True  # a keep-alive connection must be silent between requests
            return
        try:
            self._feed(r, data)
        except UpstreamHttpError as exc:
            self._broken = True
            waiter.set_exception(exc)
            return
        if r.complete:
            waiter.set_result(self._reply(r))

    def eof_received(self) -> bool:
        self._eof = True
        self._finish()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        orderly = exc is None or self._eof  # a FIN (or our own close) may end a body; a reset never does
        self._eof = True
        if orderly:
            self._finish()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                ConnectionResetError(f"upstream closed the connection before a complete response ({exc})")
            )
        self._on_lost(self)

    # -- use --------------------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, its parser at the start of a response, and nothing unread from it (a keep-alive connection
        must be silent between requests)."""
        return (
            not self.closed
            and not self._eof
            and not self._stray
            and not self._broken
            and self.transport is not None
            and not self.transport.is_closing()
        )

    async def exchange(self, data: bytes) -> tuple[Reply, bool]:
        """Write one request, return (the response, whether the connection may be reused)."""
        if not self.usable or self.transport is None:
            raise ConnectionResetError("upstream connection is closed")
        r = self._resp = _Response()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
            return await self._waiter
        finally:
            self._broken = self._broken or not r.reusable  # an error, a cancel, a close, or bytes after it
            self._waiter = None
            self._resp = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- feeding the parser -----------------------------------------------------------------------------

    def _feed(self, r: _Response, data: bytes) -> None:
        """Give *data* to the parser; a head is given whole (up to its blank line), so that its size is
        known exactly however its bytes were split."""
        if not self._in_head:
            self._parse(r, data)
            return
        if not self._head and data.startswith(_VERSION) and data[9:10] != b"1":
            # The common case, in one call: a final (not 1xx) response whose head is all here and fits.
            end = data.find(_HEAD_END)
            if 0 <= end <= MAX_HEAD - 4:
                self._parse(r, data)
                return
        buf, scan = data, 0
        if self._head:
            scan = len(self._head) - 3  # the blank line may straddle the pieces
            self._head += data
            buf = bytes(self._head)
            self._head.clear()
        view = memoryview(buf)
        pos = 0
        while self._in_head and not r.complete:
            end = buf.find(_HEAD_END, max(pos, scan))
            if (end + 4 if end >= 0 else len(buf)) - pos > MAX_HEAD:
                raise UpstreamHttpError("response head too large")
            if end < 0:
                self._head += view[pos:]
                return
            if not buf.startswith(_VERSION, pos):  # llhttp would also take HTTP/0.9, HTTP/2.0, RTSP/, ICE/
                raise UpstreamHttpError(f"bad status line {bytes(view[pos : pos + 40])!r}")
            self._parse(r, view[pos : end + 4])
            pos = end + 4
        if pos < len(buf):
            self._parse(r, view[pos:])

    def _parse(self, r: _Response, data: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._broken = True
            cause = exc.__context__
            if isinstance(cause, UpstreamHttpError):
                raise cause from None
            if r.complete:
                r.extra = True  # what follows the response does not parse: the response stands
                return
            detail = f"{exc}" if cause is None else f"{exc}: {cause!r}"
            raise UpstreamHttpError(f"malformed response ({detail})") from None

    def _finish(self) -> None:
        """The upstream ended the connection with a FIN: that completes a body delimited by the close,
        and nothing else."""
        waiter, r = self._waiter, self._resp
        if waiter is None or r is None or waiter.done():
            return
        if r.final and r.close_delimited and not r.complete:
            r.complete = True
            waiter.set_result(self._reply(r))
        elif r.final:
            waiter.set_exception(UpstreamHttpError("upstream closed the connection in the middle of a body"))
        else:
            waiter.set_exception(
                UpstreamHttpError("upstream closed the connection before a complete response")
            )

    def _reply(self, r: _Response) -> tuple[Reply, bool]:
        r.reusable = r.keep_alive and not r.extra and not self._eof and not self._stray
        return Reply(r.status, r.headers, b"".join(r.body)), r.reusable

    # -- parser callbacks (llhttp calls them from feed_data; an exception in one ends the exchange) ------

    def on_message_begin(self) -> None:
        r = self._resp
        if r is not None and r.complete:
            r.extra = True  # a second response, or junk: the connection is not reused

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self._resp
        if r is not None and not r.final:  # trailers (and anything after the response) are not forwarded
            r.raw.append((name, value))

    def on_headers_complete(self) -> None:
        r = self._resp
        if r is None or r.final:
            return
        parser = self._parser
        status = parser.get_status_code()  # of an HTTP/1.0 or 1.1 response: _feed has checked the version
        if 100 <= status < 200:  # interim response: the real one follows
            if status == 101:
                raise UpstreamHttpError("upstream switched protocols (101) in answer to a forwarded request")
            r.raw = []
            return
        # names are tokens (llhttp has checked them); of a value only OWS is trimmed, not every Unicode space
        headers = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape").strip(" \t")) for n, v in r.raw]
        length: int | None = None
        codings: str | None = None
        close = False
        for name, value in headers:
            if len(name) not in _FRAMING_LENGTHS:
                continue
            lower = name.lower()
            if lower == "content-length":
                length = int(value)  # digits only: llhttp has checked them, and refused a repeat
            elif lower == "transfer-encoding":
                codings = value.lower() if codings is None else f"{codings},{value.lower()}"
            elif lower == "connection":
                close = close or "close" in (t.strip() for t in value.lower().split(","))
        r.final, r.status, r.headers = True, status, headers
        self._in_head = False
        r.keep_alive = parser.should_keep_alive() and not close
        if status in (204, 304):
            return  # no body, whatever the headers say
        if codings is not None:
            if [c.strip() for c in codings.split(",") if c.strip()] != ["chunked"]:
                # Transfer-Encoding is hop-by-hop: forwarding a gzip-coded body without it would corrupt it.
                raise UpstreamHttpError(f"unsupported transfer coding {codings[:40]!r} (only chunked)")
            # With a Content-Length too, the framing is ambiguous (RFC 9112 6.3): read as chunked, then close.
            r.keep_alive = r.keep_alive and length is None
        elif length is not None:
            if length > self.max_body:  # refused on the head, the body never waited for
                raise ResponseTooLarge(
                    f"response body of {length} bytes exceeds the limit of {self.max_body}"
                )
        else:
            r.close_delimited, r.keep_alive = True, False

    def on_body(self, body: bytes) -> None:
        r = self._resp
        if r is None or r.complete:
            return
        if not r.final:
            raise UpstreamHttpError("interim (1xx) response with a body")
        r.received += len(body)
        if r.received > self.max_body:  # refused as soon as the running total passes the limit
            raise ResponseTooLarge(f"response body exceeds the limit of {self.max_body} bytes")
        r.body.append(body)

    def on_message_complete(self) -> None:
        self._in_head = True  # the parser is at the start of the next response
        r = self._resp
        if r is not None and r.final:
            r.complete = True


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
