"""A cheap HTTP JSON-RPC load generator that runs in its own process, so its CPU is its own and visible.

The bench's approach (``bench/loadgen.py``): pre-built request bytes written on raw asyncio protocols
over keep-alive connections, answers counted without a JSON parser: a few microseconds per request,
against a Python HTTP client's hundreds. Two shapes:

- *open loop* (``rate`` given): requests due on a fixed grid of ``1/rate`` s whatever the answers do;
  a request's latency runs from the moment it was due (a backlog waiting for a free connection
  counts: no coordinated omission);
- *closed loop* (``rate`` None): every connection sends its next request as soon as it has its answer,
  for the throughput a server can sustain.

    result = await http_load(url, rate=1000, duration=60, connections=32)
    result.latencies_ms, result.errors, result.rate, result.cpu_seconds

An answer is an error unless it is HTTP 200 with ``"result"`` in its body; a connection that fails
counts its request as an error and is opened again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_LENGTH = re.compile(rb"content-length:\s*(\d+)")
DEFAULT_BODY = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


@dataclass
class LoadResult:
    """What one run of the generator saw."""

    sent: int
    answered: int
    errors: int
    elapsed: float
    latencies_ms: list[float] = field(default_factory=list)  # one per answer, in completion order
    due: list[float] = field(default_factory=list)  # when each answered request was due (s from start)
    cpu_seconds: float = 0.0  # the generator process's own CPU (user + system)
    started_wall: float = 0.0

    @property
    def rate(self) -> float:
        """Answers per second."""
        return self.answered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.sent if self.sent else float("nan")


class _Conn(asyncio.Protocol):
    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.due: float | None = None  # the request in flight: when it was due
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.due is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            found = _LENGTH.search(head)
            length = int(found.group(1)) if found else 0
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            ok = head.startswith(b"http/1.1 200") and b'"result"' in body
            due, self.due = self.due, None
            self.gen.done(self, due, ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.due is not None:
            due, self.due = self.due, None
            self.gen.done(self, due, False)


class _Generator:
    def __init__(self, url: str, body: dict[str, Any], connections: int, rate: float | None,
                 duration: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
        self.request = head.encode() + payload
        self.connections, self.rate, self.duration = connections, rate, duration
        self.idle: deque[_Conn] = deque()
        self.backlog: deque[float] = deque()
        self.sent = self.answered = self.errors = 0
        self.latencies: list[float] = []
        self.dues: list[float] = []
        self.start = 0.0
        self.finished: asyncio.Event | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        return conn

    def _now(self) -> float:
        return time.perf_counter() - self.start

    def done(self, conn: _Conn, due: float, ok: bool) -> None:
        if ok:
            self.answered += 1
            self.latencies.append((self._now() - due) * 1000)
            self.dues.append(due)
        else:
            self.errors += 1
        if conn.lost:
            self._spawn(self._replace())
        else:
            self._release(conn)
        if self.finished is not None and self.sent == self.answered + self.errors and \
                self._now() >= self.duration:
            self.finished.set()

    async def _replace(self) -> None:
        try:
            self._release(await self._open())
        except OSError:
            await asyncio.sleep(0.05)  # the server refuses: retry at a modest pace (not a synchronisation)
            self._spawn(self._replace())

    def _release(self, conn: _Conn) -> None:
        if self.rate is None:
            if self._now() < self.duration:
                self.sent += 1
                conn.send(self._now())
            return
        if self.backlog:
            self.sent += 1
            conn.send(self.backlog.popleft())
        else:
            self.idle.append(conn)

    async def run(self) -> None:
        self.finished = asyncio.Event()
        conns = await asyncio.gather(*(self._open() for _ in range(self.connections)))
        self.start = time.perf_counter()
        if self.rate is None:
            for conn in conns:
                self._release(conn)
        else:
            self.idle.extend(conns)
            n = 0
            total = int(self.rate * self.duration)
            while n < total:
                now = self._now()
                while n < total and n / self.rate <= now:
                    due = n / self.rate
                    n += 1
                    if self.idle:
                        self.sent += 1
                        self.idle.popleft().send(due)
                    else:
                        self.backlog.append(due)
                await asyncio.sleep(max(0.0, min(0.005, n / self.rate - self._now())))  # the grid's pace
            while self.backlog and self.idle:
                self.sent += 1
                self.idle.popleft().send(self.backlog.popleft())
        if self.sent != self.answered + self.errors or self.backlog:
            try:
                await asyncio.wait_for(self.finished.wait(), timeout=30)
            except TimeoutError:
                pass
        self.errors += len(self.backlog) + (self.sent - self.answered - self.errors)
        self.sent += len(self.backlog)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()


async def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    gen = _Generator(spec["url"], spec.get("body") or DEFAULT_BODY, spec["connections"], spec.get("rate"),
                     spec["duration"])
    wall = time.time()
    cpu = time.process_time()
    await gen.run()
    elapsed = gen._now()
    return {"sent": gen.sent, "answered": gen.answered, "errors": gen.errors, "elapsed": elapsed,
            "latencies_ms": gen.latencies, "due": gen.dues, "cpu_seconds": time.process_time() - cpu,
            "started_wall": wall}


async def http_load(url: str, *, duration: float, connections: int = 16, rate: float | None = None,
                    body: dict[str, Any] | None = None, timeout: float | None = None) -> LoadResult:  # noqa: ASYNC109
    """Run the generator in a child process against *url* for *duration* seconds (open loop at *rate*
    requests/s, or closed loop when *rate* is None) and return what it saw."""
    spec = json.dumps({"url": url, "duration": duration, "connections": connections, "rate": rate,
                       "body": body})
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "workbook.httpload", spec, stdout=pipe,
                                                stderr=pipe)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout or duration + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        why = err.decode(errors="replace")[-300:]
        raise RuntimeError(f"load generator failed ({proc.returncode}): {why}")
    return LoadResult(**json.loads(out))


def main() -> None:
    print(json.dumps(asyncio.run(_generate(json.loads(sys.argv[1])))))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {os.path.basename(sys.executable)} -m workbook.httpload '<json spec>'")
    main()
