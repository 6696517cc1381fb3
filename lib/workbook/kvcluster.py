"""A kvstore cluster on a :class:`workbook.topology.Run`, every peer connection through a fault link.

``run.links.cut("kv3")`` or ``run.links.partition({"kv1", "kv2"}, {"kv3"})`` is then a real partition
while every process keeps running. Clients connect to the nodes directly.

    cluster = await KVCluster.start(run, nodes=3, defects=["no-catch-up"])
    c = cluster.client("kv1"); c.put("k", "v")
    cluster.kill("kv2"); await cluster.restart("kv2"); await cluster.wait_converged(10)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kvstore.client import AsyncKVClient, KeyNotFound, KVClient, KVError

from workbook.history import Event, History
from workbook.links import Link
from workbook.topology import Run, Service

_POLL_S = 0.05


def kv_health(timeout: float = 1.0) -> Any:
    """A topology health check: the node answers SERVING on the standard gRPC health service."""

    def check(svc: Service) -> bool:
        addr = svc.info.get("grpc") or svc.info.get("listen")
        if not addr:
            return False
        with grpc.insecure_channel(addr) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return False
        return r.status == health_pb2.HealthCheckResponse.SERVING

    check.__name__ = "kv_health"
    return check


class KVCluster:
    """N fully replicated kvstore nodes (kv1..kvN) of one run; methods read like the notebooks' steps."""

    def __init__(self, run: Run, names: Sequence[str], *, defects: Sequence[str], write_quorum: int | None,
                 extra_args: Sequence[str], ready_timeout: float) -> None:
        self.run = run
        self.names = list(names)
        self.defects = list(defects)
        self.write_quorum = write_quorum
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.peer_links: dict[tuple[str, str], Link] = {}
        self._addresses: dict[str, str] = {}  # a node keeps its address across restarts
        self._clients: list[KVClient] = []
        self._aclients: list[AsyncKVClient] = []

    # -- start -----------------------------------------------------------------------------------------
    @classmethod
    async def start(cls, run: Run, nodes: int = 3, *, defects: Iterable[str] = (),
                    write_quorum: int | None = None, extra_args: Iterable[str] = (),
                    ready_timeout: float = 30.0) -> KVCluster:
        """Create the peer links, then start every node (concurrently) and wait until all are SERVING."""
        names = [f"kv{i}" for i in range(1, nodes + 1)]
        cluster = cls(run, names, defects=list(defects), write_quorum=write_quorum,
                      extra_args=list(extra_args), ready_timeout=ready_timeout)
        for a in names:
            for b in names:
                if a != b:
                    cluster.peer_links[(a, b)] = run.links.add(
                        f"{a}->{b}", target=cluster._address_of(b), between=(a, b))
        await asyncio.gather(*(cluster._start_node(n) for n in names))
        await cluster.wait_connected(ready_timeout)
        return cluster

    def _address_of(self, name: str) -> Any:
        return lambda: self.run[name].address

    def argv(self, name: str, *, defects: Iterable[str] | None = None,
             listen: str = "127.0.0.1:0") -> list[str]:
        """The node's command line (peers are the links from this node to the others)."""
        argv = ["kvstore", "serve", "--name", name, "--data-dir", str(self.run.data_dir(name)),
                "--listen", listen, "--enable-fault-injection"]
        for other in self.names:
            if other != name:
                argv += ["--peer", f"{other}={self.peer_links[(name, other)].address}"]
        if self.write_quorum is not None:
            argv += ["--write-quorum", str(self.write_quorum)]
        for d in self.defects if defects is None else defects:
            argv += ["--defect", d]
        return argv + self.extra_args

    async def _start_node(self, name: str, *, wait: bool = True) -> Service:
        return await self.run.astart(name, self.argv(name), health=kv_health(),
                                     ready_timeout=self.ready_timeout, wait=wait)

    # -- nodes and process faults --------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Service:
        return self.run[name]

    def address(self, name: str) -> str:
        """The node's gRPC HOST:PORT (also while it restarts: a restart keeps the address)."""
        svc = self.run[name]
        if "grpc" in svc.info:
            self._addresses[name] = svc.info["grpc"]
        try:
            return self._addresses[name]
        except KeyError:
            return svc.url("grpc")

    def health(self, name: str) -> str:
        """SERVING, NOT_SERVING or UNREACHABLE, from the standard gRPC health service."""
        with KVClient(self.address(name)) as c:
            return c.health()

    def kill(self, name: str) -> None:
        """SIGKILL (kill -9) and reap."""
        self.run[name].kill()

    def stop(self, name: str, grace: float = 10.0) -> int | None:
        """SIGTERM, graceful."""
        return self.run[name].stop(grace)

    def pause(self, name: str) -> None:
        """SIGSTOP: the process hangs with its sockets open."""
        self.run[name].pause()

    def resume(self, name: str) -> None:
        self.run[name].resume()

    async def restart(self, name: str, *, wait: bool = True) -> Service:
        """Start the node again (stopping it first if it runs): same address, same data directory.
        With ``wait``, returns once it reports SERVING."""
        svc = self.run[name]
        if wait:
            return await svc.arestart(ready_timeout=self.ready_timeout)
        await asyncio.to_thread(svc.restart, wait=False)
        return svc

    # -- network faults (peer links) ------------------------------------------------------------------------
    def cut(self, name: str) -> None:
        """Cut every peer link to and from *name*; its process keeps running."""
        self.run.links.cut(name)

    def partition(self, *groups: Iterable[str]) -> None:
        self.run.links.partition(*groups)

    def heal(self, name: str | None = None) -> None:
        self.run.links.heal(name)

    def link(self, src: str, dst: str) -> Link:
        """The link *src* uses to reach *dst*."""
        return self.peer_links[(src, dst)]

    # -- clients and state -----------------------------------------------------------------------------------
    def client(self, name: str, **kwargs: Any) -> KVClient:
        """A blocking client of *name* (closed with the cluster)."""
        c = KVClient(self.address(name), **kwargs)
        self._clients.append(c)
        return c

    def aclient(self, name: str, **kwargs: Any) -> AsyncKVClient:
        """An asyncio client of *name* (closed by ``await cluster.aclose()``)."""
        c = AsyncKVClient(self.address(name), **kwargs)
        self._aclients.append(c)
        return c

    def set_clock_offset(self, name: str, seconds: float) -> float:
        """Move *name*'s clock by *seconds* (negative = behind); needs --enable-fault-injection."""
        with KVClient(self.address(name)) as c:
            return c.set_clock_offset(seconds)

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """One row per node (DataFrame-friendly); a node that does not answer gets ``phase`` down."""
        rows = []
        for name in self.names:
            svc = self.run[name]
            row: dict[str, Any] = {"name": name, "pid": svc.proc.pid if svc.proc else None}
            if not svc.alive or svc.paused:
                row.update(phase="paused" if svc.paused else "down", serving=False, digest=None)
                rows.append(row)
                continue
            try:
                with KVClient(self.address(name), timeout=timeout) as c:
                    st = c.status()
            except KVError as exc:
                row.update(phase="unreachable", serving=False, digest=None, error=str(exc))
                rows.append(row)
                continue
            st.pop("buckets", None)
            st["peers_reachable"] = sum(1 for p in st.pop("peers") if p["reachable"])
            row.update(st)
            rows.append(row)
        return rows

    async def astatus(self, call_timeout: float = 1.0) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.status, call_timeout)

    async def wait_converged(self, timeout: float = 20.0,  # noqa: ASYNC109 (a bound, not a cancel scope)
                             nodes: Iterable[str] | None = None) -> float:
        """Wait until every (given) node is up and all report the same digest and watermarks; returns the
        seconds it took. Raises TimeoutError with the last status table."""
        want = set(nodes) if nodes is not None else set(self.names)
        t0 = time.monotonic()
        rows: list[dict[str, Any]] = []
        while True:
            rows = [r for r in await self.astatus() if r["name"] in want]
            digests = {r.get("digest") for r in rows}
            marks = {tuple(sorted((r.get("watermarks") or {}).items())) for r in rows}
            if None not in digests and len(digests) == 1 and len(marks) == 1:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                table = [(r["name"], r.get("phase"), r.get("digest"), r.get("watermarks")) for r in rows]
                raise TimeoutError(f"nodes did not converge within {timeout:g} s: {table}")
            await asyncio.sleep(_POLL_S)

    async def wait_connected(self, timeout: float = 20.0,  # noqa: ASYNC109
                             nodes: Iterable[str] | None = None) -> float:
        """Wait until every (given) node is serving and reaches all its peers; returns the seconds."""
        want = set(nodes) if nodes is not None else set(self.names)
        t0 = time.monotonic()
        while True:
            rows = [r for r in await self.astatus() if r["name"] in want]
            if all(r.get("serving") and r.get("peers_reachable") == len(self.names) - 1 for r in rows):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                table = [(r["name"], r.get("phase"), r.get("peers_reachable")) for r in rows]
                raise TimeoutError(f"nodes did not connect within {timeout:g} s: {table}")
            await asyncio.sleep(_POLL_S)

    async def wait_peers(self, name: str, reachable: int, timeout: float = 10.0) -> float:  # noqa: ASYNC109
        """Wait until *name* counts exactly *reachable* reachable peers (e.g. 0 after a cut)."""
        t0 = time.monotonic()
        while True:
            row = next(r for r in await self.astatus() if r["name"] == name)
            if row.get("peers_reachable") == reachable:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{name} reaches {row.get('peers_reachable')} peers, not {reachable}, "
                                   f"after {timeout:g} s")
            await asyncio.sleep(_POLL_S)

    def logs(self) -> list[dict[str, Any]]:
        """Every node's JSON-lines log records, merged by time."""
        records = [r for name in self.names for r in self.run[name].logs()]
        return sorted(records, key=lambda r: r.get("ts", 0.0))

    def data_dir(self, name: str) -> Path:
        return self.run.data_dir(name)

    @contextlib.contextmanager
    def hold_store_writer(self, name: str) -> Iterator[None]:
        """Hold *name*'s LMDB write lock from this process (a stalled disk): opening the store — which
        writes the incarnation — waits until the block exits. Creates the timing of a slow recovery."""
        import lmdb

        env = lmdb.open(str(self.data_dir(name)), max_dbs=4, subdir=True, lock=True, map_size=256 << 20)
        try:
            txn = env.begin(write=True)
            try:
                yield
            finally:
                txn.abort()
        finally:
            env.close()

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()

    async def aclose(self) -> None:
        self.close()
        for c in self._aclients:
            await c.close()
        self._aclients.clear()


# -- workloads ---------------------------------------------------------------------------------------------
async def write_unique(cluster: KVCluster, history: History, *, nodes: Sequence[str], prefix: str = "k",
                       count: int | None = None, concurrency: int = 4, stop: asyncio.Event | None = None,
                       on_ok: Any = None, call_timeout: float = 2.0) -> None:
    """Write unique keys (``prefix-worker-i``) as fast as the cluster acknowledges them, round-robin over
    *nodes*, recording each operation in *history*; ends after *count* writes or when *stop* is set.
    ``on_ok(event)`` runs right after each acknowledgement, before the next request (to time a fault)."""
    issued = 0
    clients = {n: AsyncKVClient(cluster.address(n), timeout=call_timeout) for n in nodes}

    async def worker(w: int) -> None:
        nonlocal issued
        i = 0
        while (stop is None or not stop.is_set()) and (count is None or issued < count):
            issued += 1
            node = nodes[(w + i) % len(nodes)]
            key = f"{prefix}-{w}-{i}"
            i += 1
            ev = await history.record(f"w{w}", node, "write", key, key,
                                      lambda c=clients[node], k=key: c.put(k, k))
            if ev.type == "ok" and on_ok is not None:
                on_ok(ev)
            elif ev.type != "ok":
                await asyncio.sleep(0.01)  # pace retries against a node that is down

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        for c in clients.values():
            await c.close()


async def write_register(cluster: KVCluster, history: History, *, key: str, writes: int,
                         through: Sequence[str], reader: str) -> dict[str, str | None]:
    """One logical writer puts ``v0`` … ``v{writes-1}`` into *key* through the nodes *through* in turn,
    carrying the highest version it has seen from node to node, while a reader reads *key* from
    *reader* until the writes are done; every operation goes into *history*. Returns each node's final
    value once the cluster has converged (the input of :func:`workbook.checkers.last_write_check`)."""
    writers = {n: cluster.aclient(n) for n in dict.fromkeys(through)}
    reading = cluster.aclient(reader)
    done = asyncio.Event()

    async def write() -> None:
        seen = None
        for i in range(writes):
            node = through[i % len(through)]
            client = writers[node]
            if seen is not None:
                client.seen = max(client.seen, seen)  # one logical client, carrying its versions
            await history.record("writer", node, "write", key, f"v{i}",
                                 lambda c=client, i=i: c.put(key, f"v{i}"))
            seen = client.seen
        done.set()

    async def read() -> None:
        while not done.is_set():
            await history.record("reader", reader, "read", key, None, lambda: reading.get(key))

    await asyncio.gather(write(), read())
    await cluster.wait_converged(10)
    return {n: (await read_all(cluster, n, [key]))[key] for n in cluster.names}


async def read_all(cluster: KVCluster, node: str, keys: Iterable[str], *, concurrency: int = 16,
                   call_timeout: float = 5.0) -> dict[str, str | None]:
    """Read every key from *node*: key → value (None when not found)."""
    out: dict[str, str | None] = {}
    todo = list(keys)
    async with AsyncKVClient(cluster.address(node), timeout=call_timeout) as c:
        async def reader(part: list[str]) -> None:
            for k in part:
                try:
                    out[k] = (await c.get(k)).text
                except KeyNotFound:
                    out[k] = None
        await asyncio.gather(*(reader(todo[i::concurrency]) for i in range(concurrency)))
    return out


__all__ = ["Event", "KVCluster", "kv_health", "read_all", "write_register", "write_unique"]
