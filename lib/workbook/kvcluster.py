"""A kvstore cluster on a :class:`workbook.run.Run`, every peer connection through a fault link.

``run.links.cut("kv3")`` or ``run.links.partition({"kv1", "kv2"}, {"kv3"})`` is then a real partition
while every process keeps running. Clients connect to the nodes directly.

    cluster = await KVCluster.start(run, nodes=3, defects=["no-catch-up"])
    c = cluster.client("kv1"); c.put("k", "v")
    cluster.kill("kv2"); await cluster.restart("kv2"); await cluster.wait_converged(10)

Instant faults (signals, link changes) are plain methods; whatever waits on a node is a coroutine.
:func:`kv_outcome` is how this client turns a typed kvstore error into ok / fail / info.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kvstore.client import AsyncKVClient, KeyNotFound, KVClient, KVError

from workbook._exceptions import ConditionTimeout
from workbook.history import Outcome
from workbook.links import Link
from workbook.run import Run
from workbook.service import Service
from workbook.waiting import wait_until

_POLL_S = 0.05
# A channel of its own connection (gRPC otherwise shares a subchannel between a process's channels to
# one address), so a probe that closes never touches another client's connection attempt.
LOCAL_POOL = [("grpc.use_local_subchannel_pool", 1)]


def kv_outcome(f: str) -> Outcome:
    """How a kvstore client classifies an error of operation *f* (Jepsen's client decides):

    a read changes nothing, so a failed read is ``fail``, and a missing key is an ``ok`` read of None;
    a write is ``fail`` only when the node said it changed nothing (``KVError.applied is False``),
    otherwise ``info`` (a deadline after the local commit, a connection lost mid-call)."""

    def outcome(exc: BaseException) -> tuple[str, Any]:
        if f == "read":
            return ("ok", None) if isinstance(exc, KeyNotFound) else ("fail", None)
        return ("fail", None) if getattr(exc, "applied", None) is False else ("info", None)

    return outcome


def kv_result(result: Any) -> tuple[Any, str]:
    """(value, version) of a successful kvstore call, for :meth:`workbook.History.record`."""
    version = getattr(result, "version", None)
    vtext = f"{version.wall_ms}.{version.logical}.{version.node}" if version is not None else ""
    return getattr(result, "text", None), vtext


def kv_health(timeout: float = 1.0) -> Any:
    """A topology health check: the node answers SERVING on the standard gRPC health service."""

    def check(svc: Service) -> bool:
        addr = svc.info.get("grpc") or svc.info.get("listen")
        if not addr:
            return False
        with grpc.insecure_channel(addr, options=LOCAL_POOL) as ch:
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

    async def health(self, name: str) -> str:
        """SERVING, NOT_SERVING or UNREACHABLE, from the standard gRPC health service."""
        async with AsyncKVClient(self.address(name)) as c:
            return await c.health()

    async def watch_serving(self, name: str, timeout: float) -> float:  # noqa: ASYNC109 (a bound)
        """Follow *name*'s standard health service (``Health.Watch``: the node pushes each change, nothing
        polls) until it reports SERVING; returns the seconds it took. Waits for the port to open first.
        Raises :class:`~workbook.ConditionTimeout` when SERVING does not come within *timeout*."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        serving = health_pb2.HealthCheckResponse.SERVING
        last = ["nothing"]

        async def watch() -> None:
            while True:  # a stream broken by the node going away is opened again
                async with grpc.aio.insecure_channel(self.address(name), options=LOCAL_POOL) as ch:
                    try:
                        async for reply in health_pb2_grpc.HealthStub(ch).Watch(
                                health_pb2.HealthCheckRequest(), wait_for_ready=True):
                            last[0] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                            if reply.status == serving:
                                return
                    except grpc.aio.AioRpcError as exc:
                        last[0] = exc.code().name
                await asyncio.sleep(_POLL_S)  # pace the re-open after a broken stream (not a sync)

        try:
            await asyncio.wait_for(watch(), timeout)
        except TimeoutError:
            raise ConditionTimeout(f"not reached within {timeout:g} s: {name} reports SERVING on its "
                                   f"health service (last: {last[0]})") from None
        return loop.time() - t0

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

    async def set_clock_offset(self, name: str, seconds: float) -> float:
        """Move *name*'s clock by *seconds* (negative = behind), through the admin call of
        ``--enable-fault-injection``; returns the offset in force."""
        async with AsyncKVClient(self.address(name)) as c:
            return await c.set_clock_offset(seconds)

    def _status_now(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Blocking worker of :meth:`status`; a node that does not answer gets ``phase`` down."""
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

    async def status(self, call_timeout: float = 1.0) -> list[dict[str, Any]]:
        """One row per node (DataFrame-friendly): phase, serving, digest, watermarks, peers reachable."""
        return await asyncio.to_thread(self._status_now, call_timeout)

    async def wait_converged(self, timeout: float = 20.0,  # noqa: ASYNC109 (a bound, not a cancel scope)
                             nodes: Iterable[str] | None = None) -> float:
        """Wait until every (given) node is up and all report the same digest and watermarks; returns the
        seconds it took. Raises :class:`~workbook.ConditionTimeout` with the last status table."""
        want = set(nodes) if nodes is not None else set(self.names)
        last: list[dict[str, Any]] = []

        async def converged() -> bool:
            last[:] = [r for r in await self.status() if r["name"] in want]
            digests = {r.get("digest") for r in last}
            marks = {tuple(sorted((r.get("watermarks") or {}).items())) for r in last}
            return None not in digests and len(digests) == 1 and len(marks) == 1

        return await wait_until(converged, timeout, lambda: "nodes converge: " + str(
            [(r["name"], r.get("phase"), r.get("digest"), r.get("watermarks")) for r in last]), poll=_POLL_S)

    async def wait_connected(self, timeout: float = 20.0,  # noqa: ASYNC109
                             nodes: Iterable[str] | None = None) -> float:
        """Wait until every (given) node is serving and reaches all its peers; returns the seconds."""
        want = set(nodes) if nodes is not None else set(self.names)
        last: list[dict[str, Any]] = []

        async def connected() -> bool:
            last[:] = [r for r in await self.status() if r["name"] in want]
            return all(r.get("serving") and r.get("peers_reachable") == len(self.names) - 1 for r in last)

        return await wait_until(connected, timeout, lambda: "nodes connect: " + str(
            [(r["name"], r.get("phase"), r.get("peers_reachable")) for r in last]), poll=_POLL_S)

    async def wait_peers(self, name: str, reachable: int, timeout: float = 10.0) -> float:  # noqa: ASYNC109
        """Wait until *name* counts exactly *reachable* reachable peers (e.g. 0 after a cut)."""
        last: list[Any] = [None]

        async def counted() -> bool:
            last[0] = next(r for r in await self.status() if r["name"] == name).get("peers_reachable")
            return last[0] == reachable

        return await wait_until(counted, timeout, lambda: f"{name} reaches {reachable} peers "
                                f"(it reaches {last[0]})", poll=_POLL_S)

    def logs(self) -> list[dict[str, Any]]:
        """Every node's JSON-lines log records, merged by time."""
        records = [r for name in self.names for r in self.run[name].logs()]
        return sorted(records, key=lambda r: r.get("ts", 0.0))

    async def start_twin(self, name: str, twin: str | None = None) -> Service:
        """Start a second process for *name* with its command line on its address and data directory, as
        an impatient operator would; returns it once SERVING. Raises :class:`~workbook.ServiceError`
        (with the twin's own error line) when it refuses to start."""
        return await self.run.astart(twin or f"{name}-twin", self.argv(name, listen=self.address(name)),
                                     health=kv_health(), ready_timeout=self.ready_timeout)

    async def answered_by(self, name: str, requests: int, *, history: Any = None, key: str = "who",
                          process: str = "client") -> list[dict[str, Any]]:
        """*requests* puts to *name*'s address, each over a fresh TCP connection, each followed on that
        connection by ``Admin.Status``: which process (pid, from the node's own status) answered it.
        With *history*, each put is recorded (node = the address, result = the answering pid)."""
        from kvstore.proto import kvstore_pb2 as pb
        from kvstore.proto import kvstore_pb2_grpc as pbg

        address = self.address(name)
        rows: list[dict[str, Any]] = []
        for i in range(requests):
            # a local subchannel pool: a new connection, never one shared with an earlier channel
            async with grpc.aio.insecure_channel(address, options=LOCAL_POOL) as ch:
                async def put(ch: Any = ch, i: int = i) -> Any:
                    request = pb.PutRequest(key=key.encode(), value=f"r{i}".encode())
                    await pbg.KVStub(ch).Put(request, timeout=5)
                    return (await pbg.AdminStub(ch).Status(pb.StatusRequest(), timeout=5)).pid

                if history is not None:
                    done = await history.record(process, "write", put, node=name, key=key, value=f"r{i}",
                                                outcome=kv_outcome("write"))
                    pid = done.value if done.type == "ok" else None
                else:
                    pid = await put()
            rows.append({"request": i, "value": f"r{i}", "pid": pid})
        return rows

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


__all__ = ["KVCluster", "kv_health", "kv_outcome", "kv_result"]
