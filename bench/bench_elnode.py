"""Request rate of elnode over HTTP and over one WebSocket, against anvil measured in the same run.

The load notebook drives the production profile's request rate through the proxy to elnode, so elnode
must sustain at least three times that rate to never be the bottleneck. Loops are bounded (a fixed
number of requests), loopback only; the figures are ratios from one run on one machine, and the
client (Python) shares the machine's cores with the server, so absolute numbers are lower bounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import aiohttp
import websockets
import yaml
from workbook.anvil import ensure_anvil, why_no_anvil
from workbook.run import Run
from workbook.service import Service, http_health

HTTP_REQUESTS = 3200
HTTP_CONCURRENCY = 32
WS_REQUESTS = 5000
WS_IN_FLIGHT = 64
ROUNDS = 3  # interleaved rounds; the best of each is kept (the machine is shared and noisy)
HEADROOM = 3
PROFILE = Path(__file__).resolve().parents[1] / "parameters" / "production.yaml"
BODY = {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []}


def production_rate() -> float:
    """The production profile's HTTP request rate (requests/s)."""
    try:
        return float(yaml.safe_load(PROFILE.read_text())["request_rate"])
    except (OSError, KeyError, TypeError, ValueError):
        return 1000.0


async def http_rate(url: str) -> float:
    """Requests/s of HTTP_REQUESTS eth_blockNumber calls from HTTP_CONCURRENCY pooled workers."""
    per_worker = HTTP_REQUESTS // HTTP_CONCURRENCY
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=HTTP_CONCURRENCY)) as session:

        async def worker(w: int) -> None:
            for i in range(per_worker):
                async with session.post(url, json={**BODY, "id": w * per_worker + i}) as response:
                    answer = await response.json(content_type=None)
                    assert "result" in answer, answer

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(HTTP_CONCURRENCY)))
        return per_worker * HTTP_CONCURRENCY / (time.perf_counter() - started)


async def ws_rate(url: str) -> float:
    """Requests/s of WS_REQUESTS calls over ONE WebSocket, WS_IN_FLIGHT pipelined, matched by id."""
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        sent = received = 0
        started = time.perf_counter()
        while sent < min(WS_IN_FLIGHT, WS_REQUESTS):
            await ws.send(json.dumps({**BODY, "id": sent}))
            sent += 1
        while received < WS_REQUESTS:
            answer = json.loads(await ws.recv())
            assert "result" in answer, answer
            received += 1
            if sent < WS_REQUESTS:
                await ws.send(json.dumps({**BODY, "id": sent}))
                sent += 1
        return WS_REQUESTS / (time.perf_counter() - started)


def _anvil_health(svc: Service) -> bool:
    """anvil has no ready file: it is ready once it prints its address (port 0 picks one)."""
    match = re.search(r"Listening on (\S+:\d+)", svc.output())
    if not match:
        return False
    listen = match.group(1)
    svc.info.update(listen=listen, http=f"http://{listen}/", ws=f"ws://{listen}/")
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(targets: dict[str, Service]) -> dict[str, dict[str, float]]:
    """Per target and transport: the best observed requests/s over ROUNDS interleaved rounds, and the
    server's capacity per core (requests per CPU-second it spent), which the client's speed cannot cap."""
    best: dict[str, dict[str, float]] = {name: {} for name in targets}
    cpu: dict[tuple[str, str], float] = {}
    for svc in targets.values():
        await http_rate(svc.url("http"))
    for _ in range(ROUNDS):
        for name, svc in targets.items():
            for transport, rate in (("http", http_rate), ("ws", ws_rate)):
                before = cpu_seconds(svc.pid)
                observed = await rate(svc.url(transport))
                cpu[name, transport] = cpu.get((name, transport), 0.0) + cpu_seconds(svc.pid) - before
                best[name][transport] = max(best[name].get(transport, 0.0), observed)
    for (name, transport), seconds in cpu.items():
        count = HTTP_REQUESTS if transport == "http" else WS_REQUESTS
        best[name][f"{transport}_per_core"] = ROUNDS * count / max(seconds, 1e-9)
    return best


async def bench() -> int:
    target = HEADROOM * production_rate()
    anvil_path = await asyncio.to_thread(ensure_anvil)
    with Run.create("bench-elnode") as run:
        targets = {
            "elnode": await run.astart(
                "el1",
                ["elnode", "--listen", "127.0.0.1:0", "--name", "el1", "--block-time", "1"],
                health=http_health("/health"),
            ),
            "elnode --no-request-log": await run.astart(
                "el1-quiet",
                [
                    "elnode",
                    "--listen",
                    "127.0.0.1:0",
                    "--name",
                    "el1-quiet",
                    "--block-time",
                    "1",
                    "--no-request-log",
                ],
                health=http_health("/health"),
            ),
        }
        if anvil_path is not None:
            targets["anvil"] = await run.astart(
                "anvil",
                [anvil_path, "--host", "127.0.0.1", "--port", "0"],
                health=_anvil_health,
                ready_file=False,
                log_file=False,
            )
        results = await measure(targets)
    print("observed: best of the rounds, client-limited (a Python client on the same cores);")
    print("per core: requests per CPU-second the server process spent (its single-core capacity)")
    print(f"{'node':<26}{'HTTP req/s':>12}{'WS req/s':>12}{'HTTP/core':>12}{'WS/core':>12}")
    for name, r in results.items():
        print(
            f"{name:<26}{r['http']:>12.0f}{r['ws']:>12.0f}{r['http_per_core']:>12.0f}{r['ws_per_core']:>12.0f}"
        )
    if "anvil" in results:
        a = results["anvil"]
        for name in ("elnode", "elnode --no-request-log"):
            r = results[name]
            print(
                f"{name} / anvil: observed HTTP {r['http'] / a['http']:.2f}x, WS {r['ws'] / a['ws']:.2f}x; "
                f"per core HTTP {r['http_per_core'] / a['http_per_core']:.2f}x, "
                f"WS {r['ws_per_core'] / a['ws_per_core']:.2f}x"
            )
    else:
        print(f"anvil not measured: {why_no_anvil()}")
    el = results["elnode"]
    observed, capacity = min(el["http"], el["ws"]), min(el["http_per_core"], el["ws_per_core"])
    sustains = observed >= target or capacity >= target
    print(
        f"elnode {'sustains' if sustains else 'does NOT sustain'} {HEADROOM}x the production profile's "
        f"{production_rate():.0f} req/s (needs {target:.0f}): slowest transport observed "
        f"{observed:.0f} req/s ({observed / production_rate():.1f}x), "
        f"capacity {capacity:.0f} req/s per core ({capacity / production_rate():.1f}x)"
    )
    return 0 if sustains else 1


def main() -> int:
    return asyncio.run(bench())


if __name__ == "__main__":
    sys.exit(main())
