"""rpcproxy against elnode directly, side by side in one run: throughput and p50/p99 latency over HTTP and
WebSocket, the production load (1000 requests/s over HTTP plus 100 WebSocket sessions with newHeads
subscriptions), the pooled proxy against the ``client-per-request`` defect, and the proxy on uvloop
(``proxy``, ``--loop uvloop``) against the same proxy on asyncio's loop (``proxy-asyncio``).

Everything is printed as ratios measured in the same run on the same machine (loopback only).
Throughput is measured with load generators that cost the shared cores little (wrk over HTTP, a raw-socket
flood over WebSocket: see ``bench/loadgen.py``), so that it is the services' rate and not the client's;
the same measurement with the Python clients is printed beside it. Latency is measured one request at a
time with the Python clients.
Targets: proxy throughput >= 0.5 x direct; p50 overhead <= 1 ms; production load p99 < 100 ms. The
uvloop/asyncio ratios are printed, not judged.
Run: ``make bench`` or ``.venv/bin/python -m bench rpcproxy``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import aiohttp
import websockets
from workbook.ethstack import proxy_config_toml
from workbook.run import Run
from workbook.service import Service, http_health

from bench.loadgen import Flood, wrk_post, ws_flood
from bench.tools import debian_binary


class Measured(Protocol):
    """A Sample or a Flood: a rate, and the CPU each service process spent on it."""

    cpu: dict[str, float]

    @property
    def rate(self) -> float: ...


M = TypeVar("M", bound=Measured)

BODY = {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []}
HTTP_REQUESTS = 3000
HTTP_CONCURRENCY = 16
WS_REQUESTS = 5000
WS_IN_FLIGHT = 16
SERIAL_REQUESTS = 600
FLOOD_SECONDS = 3.0  # wrk run length
FLOOD_CONNECTIONS = 64  # wrk connections: enough to keep a single-threaded server busy
FLOOD_WS_REQUESTS = 40000
FLOOD_WS_WINDOW = 64
LOAD_RATE = 1000  # requests/s over HTTP
LOAD_SESSIONS = 100  # WebSocket sessions, each subscribed to newHeads and asking once a second
LOAD_SECONDS = 8.0
ASYNCIO = "(asyncio loop)"  # the suffix of the measurements of proxy-asyncio


@dataclass
class Sample:
    """Latencies (seconds) of one measurement and how long it took."""

    latencies: list[float]
    elapsed: float
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU-seconds each server process spent on it

    def per_core(self, process: str) -> float:
        """Requests per CPU-second of *process*: its capacity on one core, whatever the client's speed."""
        return len(self.latencies) / max(self.cpu.get(process, 0.0), 1e-9)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def http_closed_loop(url: str, total: int, concurrency: int) -> Sample:
    """*concurrency* workers each sending the next request as soon as the last is answered."""
    latencies: list[float] = []
    errors = 0
    payload = json.dumps({**BODY, "id": 1}).encode()
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        remaining = total

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as resp:
                    body = await resp.read()
                latencies.append(time.perf_counter() - started)
                errors += resp.status != 200 or b'"result"' not in body

        async with session.post(url, data=payload, headers=headers) as warm:
            await warm.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Sample(latencies, time.perf_counter() - started, errors)


async def ws_pipelined(url: str, total: int, in_flight: int) -> Sample:
    """One WebSocket, *in_flight* requests outstanding, answers matched by id."""
    latencies: list[float] = []
    sent_at: dict[int, float] = {}
    errors = 0
    async with websockets.connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        next_id = 0

        async def send_one() -> None:
            nonlocal next_id
            sent_at[next_id] = time.perf_counter()
            await ws.send(json.dumps({**BODY, "id": next_id}))
            next_id += 1

        started = time.perf_counter()
        for _ in range(min(in_flight, total)):
            await send_one()
        while len(latencies) + errors < total:
            answer = json.loads(await ws.recv())
            if "id" not in answer:
                continue
            latencies.append(time.perf_counter() - sent_at.pop(answer["id"]))
            errors += "result" not in answer
            if next_id < total:
                await send_one()
        return Sample(latencies, time.perf_counter() - started, errors)


async def production_load(http_url: str, ws_url: str) -> tuple[Sample, Sample, int]:
    """Open loop: LOAD_RATE HTTP requests/s on a fixed schedule, plus LOAD_SESSIONS WebSocket sessions each
    subscribed to newHeads and sending one request a second. Returns (HTTP, WS, notifications)."""
    http_lat: list[float] = []
    ws_lat: list[float] = []
    errors = {"http": 0, "ws": 0}
    notifications = 0
    payload = json.dumps({**BODY, "id": 1}).encode()
    headers = {"Content-Type": "application/json"}
    end = time.perf_counter() + LOAD_SECONDS

    async def session_loop(ws: websockets.ClientConnection, index: int) -> None:
        nonlocal notifications
        pending: dict[int, float] = {}
        next_send = time.perf_counter() + index / LOAD_SESSIONS  # spread the sessions over the second
        request_id = 1000

        async def reader() -> None:
            nonlocal notifications
            async for frame in ws:
                message = json.loads(frame)
                if message.get("method") == "eth_subscription":
                    notifications += 1
                elif message.get("id") in pending:
                    ws_lat.append(time.perf_counter() - pending.pop(message["id"]))
                    errors["ws"] += "result" not in message

        task = asyncio.create_task(reader())
        while time.perf_counter() < end:
            await asyncio.sleep(max(0.0, next_send - time.perf_counter()))
            pending[request_id] = time.perf_counter()
            await ws.send(json.dumps({**BODY, "id": request_id}))
            request_id += 1
            next_send += 1.0
        await asyncio.sleep(0.5)
        errors["ws"] += len(pending)
        task.cancel()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        conns = [
            await websockets.connect(ws_url, compression=None, ping_interval=None)
            for _ in range(LOAD_SESSIONS)
        ]
        for ws in conns:
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
            )

        async def one_http() -> None:
            started = time.perf_counter()
            try:
                async with session.post(http_url, data=payload, headers=headers) as resp:
                    body = await resp.read()
                errors["http"] += resp.status != 200 or b'"result"' not in body
            except aiohttp.ClientError:
                errors["http"] += 1
            http_lat.append(time.perf_counter() - started)

        async def http_schedule() -> None:
            tasks = []
            started = time.perf_counter()
            count = int(LOAD_RATE * LOAD_SECONDS)
            for i in range(count):
                await asyncio.sleep(max(0.0, started + i / LOAD_RATE - time.perf_counter()))
                tasks.append(asyncio.create_task(one_http()))
            await asyncio.gather(*tasks)

        started = time.perf_counter()
        await asyncio.gather(http_schedule(), *(session_loop(ws, i) for i, ws in enumerate(conns)))
        elapsed = time.perf_counter() - started
        for ws in conns:
            await ws.close()
    return (Sample(http_lat, elapsed, errors["http"]), Sample(ws_lat, elapsed, errors["ws"]), notifications)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _row(name: str, sample: Sample) -> str:
    return (
        f"{name:<42}{sample.rate:>10.0f}{sample.pct(0.5) * 1e3:>9.2f}{sample.pct(0.99) * 1e3:>9.2f}"
        f"{sample.errors:>8}"
    )


async def start_topology(run: Run) -> dict[str, Service]:
    genesis = str(int(time.time()) - 100)
    node_args = [
        "--chain-id",
        "1337",
        "--block-time",
        "1",
        "--seed",
        "1",
        "--genesis-time",
        genesis,
        "--no-request-log",
    ]
    services = {}
    for name in ("el1", "el2"):
        services[name] = await run.astart(
            name,
            ["elnode", "--listen", "127.0.0.1:0", "--name", name, *node_args],
            health=http_health("/health"),
        )
    config = run.path("rpcproxy.toml")
    config.write_text(proxy_config_toml({"health_interval": 0.5, "pool_size": 128}))
    upstreams = [
        "--primary",
        f"el1={services['el1'].url('http')}",
        "--backup",
        f"el2={services['el2'].url('http')}",
    ]
    for name, extra in (
        ("proxy", ["--loop", "uvloop"]),
        ("proxy-asyncio", ["--loop", "asyncio"]),
        ("proxy-per-request", ["--loop", "uvloop", "--defect", "client-per-request"]),
    ):
        services[name] = await run.astart(
            name,
            [
                "rpcproxy",
                "--listen",
                "127.0.0.1:0",
                "--name",
                name,
                "--config",
                str(config),
                *upstreams,
                *extra,
            ],
            health=http_health("/health"),
        )
    return services


async def floods(services: dict[str, Service], wrk: str | None) -> dict[str, Flood]:
    """Throughput with the cheap load generators, direct and via the proxy, in interleaved rounds (the
    better of each kept, so a noisy neighbour costs less). HTTP rows are missing when wrk is."""
    targets = (
        ("direct", services["el1"]),
        ("via proxy", services["proxy"]),
        (f"via proxy {ASYNCIO}", services["proxy-asyncio"]),
    )
    body = {**BODY, "id": 1}
    plan: list[tuple[str, Callable[[], Awaitable[Flood]]]] = [
        (
            f"WS {label}",
            lambda url=svc.url("ws"): ws_flood(url, BODY, total=FLOOD_WS_REQUESTS, window=FLOOD_WS_WINDOW),
        )
        for label, svc in targets
    ]
    if wrk is not None:
        for name, svc in ((f"HTTP {label}", svc) for label, svc in targets):
            plan.append(
                (
                    name,
                    lambda url=svc.url("http"): asyncio.to_thread(
                        wrk_post, wrk, url, body, connections=FLOOD_CONNECTIONS, seconds=FLOOD_SECONDS
                    ),
                )
            )
    return await best_of(3, plan, services)


async def best_of(
    rounds: int, plan: list[tuple[str, Callable[[], Awaitable[M]]]], services: dict[str, Service]
) -> dict[str, M]:
    """Each measurement of *plan*, *rounds* times interleaved, the faster of each kept (so a noisy
    neighbour costs less), with the CPU-seconds every service process spent on it."""
    best: dict[str, M] = {}
    for _ in range(rounds):
        for name, measure in plan:
            before = {p: cpu_seconds(svc.pid) for p, svc in services.items()}
            result = await measure()
            result.cpu = {p: cpu_seconds(svc.pid) - before[p] for p, svc in services.items()}
            if name not in best or result.rate > best[name].rate:
                best[name] = result
    return best


async def bench() -> int:
    wrk, why_no_wrk = debian_binary("wrk", "wrk")
    with Run.create("bench-rpcproxy") as run:
        s = await start_topology(run)
        el1, proxy, per_request = s["el1"], s["proxy"], s["proxy-per-request"]
        on_asyncio = s["proxy-asyncio"]
        flooded = await floods(s, wrk)
        plan: list[tuple[str, Callable[[], Awaitable[Sample]]]] = [
            ("HTTP direct", lambda: http_closed_loop(el1.url("http"), HTTP_REQUESTS, HTTP_CONCURRENCY)),
            (
                "HTTP via proxy",
                lambda: http_closed_loop(proxy.url("http"), HTTP_REQUESTS, HTTP_CONCURRENCY),
            ),
            (
                "HTTP via proxy, client-per-request",
                lambda: http_closed_loop(per_request.url("http"), HTTP_REQUESTS, HTTP_CONCURRENCY),
            ),
            ("WS direct", lambda: ws_pipelined(el1.url("ws"), WS_REQUESTS, WS_IN_FLIGHT)),
            ("WS via proxy", lambda: ws_pipelined(proxy.url("ws"), WS_REQUESTS, WS_IN_FLIGHT)),
            ("HTTP serial direct", lambda: http_closed_loop(el1.url("http"), SERIAL_REQUESTS, 1)),
            ("HTTP serial via proxy", lambda: http_closed_loop(proxy.url("http"), SERIAL_REQUESTS, 1)),
            (
                f"HTTP serial via proxy {ASYNCIO}",
                lambda: http_closed_loop(on_asyncio.url("http"), SERIAL_REQUESTS, 1),
            ),
            ("WS serial direct", lambda: ws_pipelined(el1.url("ws"), SERIAL_REQUESTS, 1)),
            ("WS serial via proxy", lambda: ws_pipelined(proxy.url("ws"), SERIAL_REQUESTS, 1)),
            (
                f"WS serial via proxy {ASYNCIO}",
                lambda: ws_pipelined(on_asyncio.url("ws"), SERIAL_REQUESTS, 1),
            ),
        ]
        results = await best_of(2, plan, s)
        load_http, load_ws, notifications = await production_load(proxy.url("http"), proxy.url("ws"))

    print("throughput, cheap load generators (wrk over HTTP, raw-socket flood over WebSocket):")
    print(f"  {'measurement':<40}{'req/s':>10}{'errors':>8}   CPU cores used (el1, proxy, proxy-asyncio)")
    for name, flood in flooded.items():
        processes = ("el1", "proxy", "proxy-asyncio")
        cores = "  ".join(f"{flood.cpu.get(p, 0.0) / flood.elapsed:.2f}" for p in processes)
        print(f"  {name:<40}{flood.rate:>10.0f}{flood.errors:>8}   {cores}")
    if wrk is None:
        print(f"  HTTP: not measured: {why_no_wrk}")
    print()
    print("Python clients (aiohttp, websockets; throughput here is capped by the client's own CPU):")
    print(f"  {'measurement':<42}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, sample in results.items():
        print("  " + _row(name, sample))
    print("  " + _row(f"load: HTTP {LOAD_RATE}/s via proxy", load_http))
    print(
        "  "
        + _row(f"load: {LOAD_SESSIONS} WS sessions via proxy", load_ws)
        + f"   ({notifications} newHeads)"
    )

    r, f = results, flooded
    checks: dict[str, float | None] = {
        "HTTP throughput proxy/direct >= 0.5": (
            f["HTTP via proxy"].rate / f["HTTP direct"].rate if "HTTP direct" in f else None
        ),
        "WS throughput proxy/direct >= 0.5": f["WS via proxy"].rate / f["WS direct"].rate,
    }
    overhead = {
        "HTTP p50 overhead (serial) <= 1 ms": (
            r["HTTP serial via proxy"].pct(0.5) - r["HTTP serial direct"].pct(0.5)
        )
        * 1e3,
        "WS p50 overhead (serial) <= 1 ms": (
            r["WS serial via proxy"].pct(0.5) - r["WS serial direct"].pct(0.5)
        )
        * 1e3,
    }
    load_p99 = max(load_http.pct(0.99), load_ws.pct(0.99)) * 1e3
    achieved = len(load_http.latencies) / LOAD_SECONDS
    pooled, fresh = r["HTTP via proxy"], r["HTTP via proxy, client-per-request"]
    flood_errors = sum(flood.errors for flood in f.values())
    print()
    ok = flood_errors == 0
    for label, ratio in checks.items():
        if ratio is None:
            ok = False
            print(f"{label:<44}{'-':>8}  NOT MEASURED ({why_no_wrk})")
            continue
        ok &= ratio >= 0.5
        print(f"{label:<44}{ratio:>8.2f}  {'ok' if ratio >= 0.5 else 'MISSED'}")
    if flood_errors:
        print(f"{'throughput answers that were not results':<44}{flood_errors:>8}  MISSED")
    for label, ms in overhead.items():
        ok &= ms <= 1.0
        print(f"{label:<44}{ms:>8.2f}  {'ok' if ms <= 1.0 else 'MISSED'}")
    held = load_p99 < 100 and load_http.errors + load_ws.errors == 0
    ok &= held
    print(
        f"{'production load p99 < 100 ms, no errors':<44}{load_p99:>8.1f}  {'ok' if held else 'MISSED'}"
        f"   (HTTP sent at {achieved:.0f}/s)"
    )
    print(f"{'pooled / client-per-request throughput':<44}{pooled.rate / fresh.rate:>8.2f}")
    print(f"{'client-per-request / pooled p99':<44}{fresh.pct(0.99) / pooled.pct(0.99):>8.2f}")
    print(
        f"{'with the Python clients: HTTP proxy/direct':<44}"
        f"{r['HTTP via proxy'].rate / r['HTTP direct'].rate:>8.2f}"
        f"   WS {r['WS via proxy'].rate / r['WS direct'].rate:.2f} (client-limited, not a target)"
    )
    print_loops(f, r)
    print()
    print("capacity per core (requests per CPU-second of the process; independent of the client's speed):")
    for name, process in (
        ("HTTP direct", "el1"),
        ("HTTP via proxy", "proxy"),
        ("WS direct", "el1"),
        ("WS via proxy", "proxy"),
        (f"HTTP via proxy {ASYNCIO}", "proxy-asyncio"),
        (f"WS via proxy {ASYNCIO}", "proxy-asyncio"),
    ):
        if name in f:
            print(f"  {name + ' (' + process + ')':<52}{f[name].per_core(process):>10.0f}")
    label = "HTTP via proxy, client-per-request (proxy-per-request)"
    print(f"  {label:<52}{fresh.per_core('proxy-per-request'):>10.0f}")
    for kind in ("HTTP", "WS"):
        if f"{kind} direct" in f:
            ratio = f[f"{kind} via proxy"].per_core("proxy") / f[f"{kind} direct"].per_core("el1")
            print(f"  {'proxy ' + kind + ' capacity / elnode ' + kind + ' capacity':<52}{ratio:>10.2f}")
    return 0 if ok else 1


def print_loops(flooded: dict[str, Flood], results: dict[str, Sample]) -> None:
    """The proxy on uvloop against the proxy on asyncio's loop, same run: throughput ratios (floods) and
    serial p50 differences. Printed for docs/decisions.md, not judged."""
    print()
    print("event loop, uvloop (proxy) against asyncio (proxy-asyncio), not targets:")
    for kind in ("HTTP", "WS"):
        uv, aio = flooded.get(f"{kind} via proxy"), flooded.get(f"{kind} via proxy {ASYNCIO}")
        if uv is None or aio is None:
            print(f"  {kind + ' throughput uvloop/asyncio':<42}{'-':>8}  not measured")
        else:
            print(f"  {kind + ' throughput uvloop/asyncio':<42}{uv.rate / aio.rate:>8.2f}")
    for kind in ("HTTP", "WS"):
        uv_p50 = results[f"{kind} serial via proxy"].pct(0.5)
        aio_p50 = results[f"{kind} serial via proxy {ASYNCIO}"].pct(0.5)
        label = f"{kind} p50 uvloop - asyncio (serial), ms"
        print(f"  {label:<42}{(uv_p50 - aio_p50) * 1e3:>8.3f}")


def main() -> int:
    return asyncio.run(bench())


if __name__ == "__main__":
    sys.exit(main())
