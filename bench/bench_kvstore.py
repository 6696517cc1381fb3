"""kvstore throughput: acknowledged puts/s with p50/p99 for a 3-node cluster at W=majority, a single
node with and without group commit, and (where Debian's etcd-server is available) a 3-member etcd on
loopback measured in the same run as the reference, as ratios.

Loops are bounded (a fixed number of puts, and a time cap), loopback only. Client and servers share
the machine's cores, so absolute figures are lower bounds; the ratios are what to read.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kvstore.client import AsyncKVClient
from workbook.kvcluster import KVCluster
from workbook.run import Run
from workbook.service import Service

from bench.kv_disk import disk_under_steady_load
from bench.kv_profile import profile_puts
from bench.tools import debian_binary

PUTS = 1500
CONCURRENCY = 16
CHANNELS = 4
TIME_CAP_S = 8.0
VALUE = b"x" * 100
ROUNDS = 3


async def drive(
    put: Callable[[int], Awaitable[Any]], puts: int = PUTS, concurrency: int = CONCURRENCY
) -> dict:
    """Run *puts* acknowledged puts with *concurrency* workers (capped at TIME_CAP_S); latency stats."""
    latencies: list[float] = []
    errors = 0
    next_i = 0
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal next_i, errors
        while next_i < puts and time.perf_counter() - t0 < TIME_CAP_S:
            i = next_i
            next_i += 1
            s = time.perf_counter()
            try:
                await put(i)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - s)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "puts": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "puts_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None,
    }


async def bench_kvstore(nodes: int, extra_args: list[str], label: str) -> dict:
    with Run.create(f"bench-kv-{label}") as run:
        cluster = await KVCluster.start(run, nodes, extra_args=extra_args)
        try:
            put = KVPutter(cluster)
            await drive(lambda i: put(i, "warm"), puts=100)
            result = await drive(lambda i: put(i, label))
            result["ops_per_commit"] = await ops_per_commit(cluster)
        finally:
            await put.close()
            await cluster.aclose()
    return result


async def ops_per_commit(cluster: KVCluster) -> float:
    st = await cluster.status()
    ops = sum(r.get("committed_ops", 0) for r in st)
    commits = sum(r.get("commits", 0) for r in st) or 1
    return round(ops / commits, 2)


class KVPutter:
    """``await put(i, prefix)`` over CHANNELS clients spread across the cluster's nodes."""

    def __init__(self, cluster: KVCluster) -> None:
        n = len(cluster.names)
        self.clients = [AsyncKVClient(cluster.address(cluster.names[i % n])) for i in range(CHANNELS)]

    async def __call__(self, i: int, prefix: str) -> Any:
        return await self.clients[i % CHANNELS].put(f"{prefix}-{i}", VALUE)

    async def close(self) -> None:
        for c in self.clients:
            await c.close()


# -- etcd ----------------------------------------------------------------------------------------------
def etcd_binary() -> tuple[str | None, str]:
    """Path to etcd, installing Debian's etcd-server when running as root; else (None, why)."""
    return debian_binary("etcd", "etcd-server")


def free_port() -> int:
    """A free loopback port. etcd must advertise its peer URLs up front, so port 0 cannot be used."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_health(port: int) -> Callable[[Service], bool]:
    def check(svc: Service) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    return check


async def start_etcd(run: Run, binary: str) -> list[str]:
    """Three etcd members on loopback; returns their put URLs (the v3 HTTP gateway)."""
    members = {f"etcd{i}": (free_port(), free_port()) for i in range(1, 4)}
    initial = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, (_, peer) in members.items())
    starts = []
    for name, (client, peer) in members.items():
        argv = [
            binary, "--name", name, "--data-dir", str(run.data_dir(name)),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "bench", "--log-level", "error",
        ]
        starts.append(run.astart(name, argv, health=etcd_health(client), ready_timeout=30, ready_file=False,
                                 log_file=False))
    await asyncio.gather(*starts)
    return [f"http://127.0.0.1:{client}/v3/kv/put" for client, _ in members.values()]


def etcd_putter(http: aiohttp.ClientSession, urls: list[str]) -> Callable[[int, str], Awaitable[None]]:
    value = base64.b64encode(VALUE).decode()

    async def put(i: int, prefix: str) -> None:
        key = base64.b64encode(f"{prefix}-{i}".encode()).decode()
        async with http.post(urls[i % len(urls)], json={"key": key, "value": value}) as r:
            r.raise_for_status()
            await r.read()

    return put


async def versus_etcd(binary: str, rounds: int = ROUNDS) -> dict:
    """The 3-node W=2 store and a 3-member etcd, both up at once, measured *rounds* times interleaved
    (kvstore, etcd, kvstore, …); each round's ratio, and the medians."""
    with Run.create("bench-kv-vs-etcd") as run:
        cluster = await KVCluster.start(run, 3)
        urls = await start_etcd(run, binary)
        kv = KVPutter(cluster)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
                etcd = etcd_putter(http, urls)
                await drive(lambda i: kv(i, "warm"), puts=100)
                await drive(lambda i: etcd(i, "warm"), puts=100)
                per_round = []
                for r in range(rounds):
                    k = await drive(lambda i, r=r: kv(i, f"kv{r}"))
                    e = await drive(lambda i, r=r: etcd(i, f"etcd{r}"))
                    per_round.append({"kvstore": k, "etcd": e, "ratio": k["puts_per_s"] / e["puts_per_s"]})
        finally:
            await kv.close()
            await cluster.aclose()
    med = statistics.median
    return {
        "rounds": per_round,
        "ratio": med(r["ratio"] for r in per_round),
        "kv_puts_per_s": med(r["kvstore"]["puts_per_s"] for r in per_round),
        "etcd_puts_per_s": med(r["etcd"]["puts_per_s"] for r in per_round),
        "kv_p99_ms": med(r["kvstore"]["p99_ms"] for r in per_round),
        "etcd_p99_ms": med(r["etcd"]["p99_ms"] for r in per_round),
    }


async def run_all() -> int:
    print(f"kvstore bench: {PUTS} puts of {len(VALUE)} bytes, {CONCURRENCY} concurrent clients, loopback")
    rows = {}
    rows["kvstore 1 node, group commit"] = await bench_kvstore(1, [], "group")
    rows["kvstore 1 node, no group commit"] = await bench_kvstore(1, ["--no-group-commit"], "single")
    binary, why = etcd_binary()
    versus = None
    if binary:
        versus = await versus_etcd(binary)
        for i, r in enumerate(versus["rounds"]):
            rows[f"kvstore 3 nodes W=2, round {i + 1}"] = r["kvstore"]
            rows[f"etcd 3 members (HTTP), round {i + 1}"] = r["etcd"]
    else:
        rows["kvstore 3 nodes W=2"] = await bench_kvstore(3, [], "cluster")
    for name, r in rows.items():
        print(
            f"  {name:36s} {r['puts_per_s']:8.1f} puts/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
            f"({r['puts']} puts, {r['errors']} errors, {r.get('ops_per_commit', '-')} ops/commit)"
        )
    group, single = rows["kvstore 1 node, group commit"], rows["kvstore 1 node, no group commit"]
    print(f"  group commit speed-up (1 node): {group['puts_per_s'] / single['puts_per_s']:.2f}x")
    if versus:
        each = ", ".join(f"{r['ratio']:.2f}x" for r in versus["rounds"])
        print(
            f"  kvstore 3 nodes / etcd 3 members, median of {len(versus['rounds'])} interleaved rounds: "
            f"{versus['ratio']:.2f}x throughput ({versus['kv_puts_per_s']:.0f} vs "
            f"{versus['etcd_puts_per_s']:.0f} puts/s; rounds "
            f"{each}), "
            f"p99 {versus['kv_p99_ms']} ms vs {versus['etcd_p99_ms']} ms"
        )
    else:
        print(f"  etcd reference skipped: {why}")
    await profile_puts()
    disk = await disk_under_steady_load()
    ok = all(r["puts"] for r in rows.values()) and disk["puts"] > 0
    return 0 if ok else 1


def main() -> int:
    return asyncio.run(run_all())


if __name__ == "__main__":
    sys.exit(main())
