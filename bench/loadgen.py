"""Load generators that cost the shared cores little, for throughput: wrk over HTTP, a raw-socket flood over
WebSocket.

On a 2-core machine the load generator shares the cores with what it measures. A Python client
(aiohttp, websockets) spends about as much CPU per request as elnode spends answering it, so a
throughput measured with it is mostly the client's own ceiling: direct, client and node each fill a core;
through a proxy, the client's share is taken from the proxy and the node. These generators spend a few
microseconds per request, so the measured rate is the services' rate. Latency is still measured with the
Python clients (one request at a time), where the client's cost does not matter.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Flood:
    """What a load generator achieved: answers, over how long, how many of them were not results."""

    answers: int
    elapsed: float
    errors: int
    cpu: dict[str, float] = field(default_factory=dict)  # CPU-seconds each server process spent on it

    @property
    def rate(self) -> float:
        return self.answers / self.elapsed if self.elapsed > 0 else 0.0

    def per_core(self, process: str) -> float:
        """Answers per CPU-second of *process*: its capacity on one core."""
        return self.answers / max(self.cpu.get(process, 0.0), 1e-9)


# wrk calls response() for every answer; errors are non-200 answers or bodies without a "result".
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) errors = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"result"', 1, true) then errors = errors + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("errors") end
  io.write(string.format("WORKBOOK answers=%%d errors=%%d socket_errors=%%d\\n", summary.requests, total,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk_post(wrk: str, url: str, body: dict, *, connections: int, seconds: float) -> Flood:
    """POST *body* over *connections* keep-alive connections for *seconds* (one wrk thread)."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script = Path(tmp, "post.lua")
        script.write_text(_WRK_SCRIPT % json.dumps(json.dumps(body)))
        proc = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    found = re.search(r"WORKBOOK answers=(\d+) errors=(\d+) socket_errors=(\d+)", proc.stdout)
    took = re.search(r"requests in ([\d.]+)(\w+)", proc.stdout)
    if proc.returncode != 0 or not found or not took:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-300:]}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[took.group(2)]
    answers, errors, socket_errors = (int(g) for g in found.groups())
    return Flood(answers, float(took.group(1)) * scale, errors + socket_errors)


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", n)
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + mask + masked


class _WsFlood(asyncio.Protocol):
    """Keeps *window* requests in flight on one WebSocket; counts the text frames that come back."""

    def __init__(self, frames: list[bytes], total: int, done: asyncio.Future[Flood]) -> None:
        self.frames, self.total, self.done = frames, total, done
        self.buf = bytearray()
        self.sent = self.answers = self.errors = 0
        self.upgraded = False
        self.started = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def _send(self, count: int) -> None:
        count = min(count, self.total - self.sent)
        if count > 0 and self.transport is not None:
            window = len(self.frames)
            self.transport.write(b"".join(self.frames[(self.sent + i) % window] for i in range(count)))
            self.sent += count

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self._finish(RuntimeError(f"no WebSocket upgrade: {bytes(self.buf[:60])!r}"))
                return
            del self.buf[: end + 4]
            self.upgraded = True
            self.started = time.perf_counter()
            self._send(len(self.frames))
        buf, pos, answered = self.buf, 0, 0
        while len(buf) - pos >= 2:
            opcode, length, header = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length, header = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                length, header = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < header + length:
                break
            if opcode == 0x1:  # a text frame: one answer (control frames are not answers)
                answered += 1
                self.errors += buf.find(b'"result"', pos + header, pos + header + length) < 0
            pos += header + length
        del buf[:pos]
        self.answers += answered
        if self.answers >= self.total:
            self._finish(None)
        else:
            self._send(answered)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(ConnectionError(f"closed after {self.answers} of {self.total} answers ({exc})"))

    def _finish(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(Flood(self.answers, time.perf_counter() - self.started, self.errors))
        else:
            self.done.set_exception(exc)


async def ws_flood(url: str, body: dict, *, total: int, window: int) -> Flood:
    """Send *total* requests over one WebSocket, *window* in flight (ids 0..window-1, reused), pre-built
    masked frames written in bursts; count the answers. Answers are not matched to ids (that is the
    Python client's job in the latency measurements); an answer without a ``result`` counts as an error."""
    parts = urlsplit(url)
    frames = [_masked_text_frame(json.dumps({**body, "id": i}).encode()) for i in range(window)]
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Flood] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _WsFlood(frames, total, done), parts.hostname, parts.port
    )
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return await asyncio.wait_for(done, timeout=60)
    finally:
        transport.abort()
