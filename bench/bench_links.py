"""What a fault link costs: echo round trips and bulk throughput direct vs through a healed link.

Every KV peer connection and every proxy upstream goes through a link in the notebooks, so the link
must not be what a notebook measures. Both paths run against the same echo service in the same run,
interleaved, best of several rounds; the figures are ratios (link / direct).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from workbook.run import Run

TINY = [
    sys.executable,
    str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tinyservice.py"),
    "--listen",
    "127.0.0.1:0",
]
ROUND_TRIPS = 2000
BULK_BYTES = 32 * 1024 * 1024
ROUNDS = 3


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(address: str) -> float:
    """Seconds per 1-byte echo round trip."""
    with _connect(address) as sock:
        start = time.perf_counter()
        for _ in range(ROUND_TRIPS):
            sock.sendall(b"x")
            sock.recv(1)
        return (time.perf_counter() - start) / ROUND_TRIPS


def bulk(address: str) -> float:
    """Bytes per second echoed back (send and receive interleaved in chunks)."""
    chunk = b"y" * 65536
    with _connect(address) as sock:
        start = time.perf_counter()
        sent = received = 0
        while received < BULK_BYTES:
            if sent < BULK_BYTES and sent - received < 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
            received += len(sock.recv(1 << 20))
        return BULK_BYTES / (time.perf_counter() - start)


def main() -> int:
    with Run.create("bench-links") as run:
        echo = run.start("echo", TINY)
        direct = echo.info["echo"]
        link = run.links.add("bench", direct).address
        rtt = {"direct": [], "link": []}
        rate = {"direct": [], "link": []}
        for _ in range(ROUNDS):
            for name, address in (("direct", direct), ("link", link)):
                rtt[name].append(round_trips(address))
                rate[name].append(bulk(address))
        best_rtt = {k: min(v) for k, v in rtt.items()}
        best_rate = {k: max(v) for k, v in rate.items()}
    print(
        f"echo round trip: direct {best_rtt['direct'] * 1e6:.0f} us, link {best_rtt['link'] * 1e6:.0f} us "
        f"-> link/direct = {best_rtt['link'] / best_rtt['direct']:.2f}x"
    )
    print(
        f"bulk echo: direct {best_rate['direct'] / 1e6:.0f} MB/s, link {best_rate['link'] / 1e6:.0f} MB/s "
        f"-> link/direct = {best_rate['link'] / best_rate['direct']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
