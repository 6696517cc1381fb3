"""Request rate of elnode over HTTP and over one WebSocket, against anvil measured in the same run.

The load notebook drives the production profile's request rate through the proxy to elnode, so elnode
must sustain at least three times that rate to never be the bottleneck. Loops are bounded (a fixed
number of requests), loopback only; the figures are ratios from one run on one machine, and the
client (Python) shares the machine's cores with the server, so absolute numbers are lower bounds.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

import aiohttp
import websockets
import yaml
from workbook.anvil import ensure_anvil, why_no_anvil
from workbook.topology import Run, Service, http_health

HTTP_REQUESTS = 6000
HTTP_CONCURRENCY = 32
WS_REQUESTS = 10_000
WS_IN_FLIGHT = 64
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


async def measure(svc: Service) -> dict[str, float]:
    await http_rate(svc.url("http"))  # warm-up of the same size: connections, caches, JIT-free paths
    return {"http": await http_rate(svc.url("http")), "ws": await ws_rate(svc.url("ws"))}


async def bench() -> int:
    target = HEADROOM * production_rate()
    results: dict[str, dict[str, float]] = {}
    with Run.create("bench-elnode") as run:
        node = await run.astart("el1", ["elnode", "--listen", "127.0.0.1:0", "--name", "el1",
                                        "--block-time", "1"], health=http_health("/health"))
        results["elnode"] = await measure(node)
        quiet = await run.astart("el1-quiet", ["elnode", "--listen", "127.0.0.1:0", "--name", "el1-quiet",
                                               "--block-time", "1", "--no-request-log"],
                                 health=http_health("/health"))
        results["elnode --no-request-log"] = await measure(quiet)
        await asyncio.to_thread(quiet.stop)
        anvil_path = await asyncio.to_thread(ensure_anvil)
        if anvil_path is not None:
            anvil = await run.astart("anvil", [anvil_path, "--host", "127.0.0.1", "--port", "0"],
                                     health=_anvil_health, ready_file=False, log_file=False)
            results["anvil"] = await measure(anvil)
    print(f"{'node':<26}{'HTTP req/s':>12}{'WS req/s':>12}")
    for name, rates in results.items():
        print(f"{name:<26}{rates['http']:>12.0f}{rates['ws']:>12.0f}")
    if "anvil" in results:
        for name in ("elnode", "elnode --no-request-log"):
            print(f"{name} / anvil: HTTP {results[name]['http'] / results['anvil']['http']:.2f}x, "
                  f"WS {results[name]['ws'] / results['anvil']['ws']:.2f}x")
    else:
        print(f"anvil not measured: {why_no_anvil()}")
    slowest = min(results["elnode"].values())
    verdict = "sustains" if slowest >= target else "does NOT sustain"
    print(f"elnode {verdict} {HEADROOM}x the production profile's {production_rate():.0f} req/s "
          f"(needs {target:.0f}; slowest transport {slowest:.0f} req/s, "
          f"{slowest / production_rate():.1f}x the profile)")
    return 0 if slowest >= target else 1


def main() -> int:
    return asyncio.run(bench())


if __name__ == "__main__":
    sys.exit(main())
