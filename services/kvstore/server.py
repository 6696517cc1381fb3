"""The kvstore node: gRPC services (KV, Admin, Replication, health) over the LMDB store and peers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import lmdb
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from servicekit import JsonLogger, write_ready_file

from kvstore.clock import ClockDriftError, HybridClock, Stamp
from kvstore.compaction import Compactor
from kvstore.datalock import DataDirLock
from kvstore.limits import BATCH_BYTES, grpc_options, message_limit
from kvstore.ports import holder_of, in_use
from kvstore.proto import kvstore_pb2 as pb
from kvstore.proto import kvstore_pb2_grpc as pbg
from kvstore.repair import Repair
from kvstore.replication import ANSWERED_BY, CALL_TIMEOUT_S, Peer, answered, describe
from kvstore.storage import BUCKETS, MAX_KEY_BYTES, Store, StoreClosed, StoreFull, newer

DEFECTS = {
    "ack-before-commit": "acknowledge a put from an in-memory buffer and commit it in the background "
                         "every 100 ms (kill -9 loses acknowledged writes)",
    "ready-before-recovery": "report SERVING on the health service before the store is opened and "
                             "recovered",
    "async-replication": "acknowledge a put after the local commit only (W=1); ship to peers later",
    "no-catch-up": "fire-and-forget replication: an undelivered write is never sent again, nodes never "
                   "compare contents",
    "wall-clock-lww": "versions are the node's wall clock (with its offset); no hybrid clock, clients' "
                      "versions ignored",
    "serve-before-catch-up": "serve reads before catching up with the reachable peers",
    "shared-port": "bind with SO_REUSEPORT and take no lock on the data directory",
}

SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
]
CONTACT_WINDOW_S = 3.0  # how long a starting node tries to reach each peer before it skips it
FLUSH_INTERVAL_S = 0.1


@dataclass
class NodeConfig:
    """Everything ``kvstore serve`` was told."""

    name: str
    data_dir: Path
    host: str
    port: int
    peers: dict[str, str] = field(default_factory=dict)
    write_quorum: int | None = None
    map_size: int = 256 << 20
    max_value_bytes: int = 1 << 20
    max_clock_drift_s: float = 10.0
    write_timeout_s: float = 5.0
    catch_up_timeout_s: float = 10.0
    compact_interval_s: float = 5.0
    tombstone_grace_s: float = 300.0
    group_commit: bool = True
    defects: frozenset[str] = frozenset()
    fault_injection: bool = False
    ready_file: str | None = None


# Trailing metadata of a refusal that certainly changed nothing (the client's typed errors read it).
NOT_APPLIED = (("kv-applied", "no"),)


class Abort(Exception):
    """Ends an RPC with a status code and a clear message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Node:
    """One replica. Phases: opening → recovering → catching-up → serving → stopping."""

    def __init__(self, cfg: NodeConfig, log: JsonLogger) -> None:
        self.cfg = cfg
        self.log = log
        self.defects = cfg.defects
        n = 1 + len(cfg.peers)
        self.write_quorum = 1 if "async-replication" in self.defects else (cfg.write_quorum or n // 2 + 1)
        self.clock = HybridClock(cfg.name, max_drift_s=cfg.max_clock_drift_s,
                                 wall_clock_only="wall-clock-lww" in self.defects)
        self.store = Store(cfg.data_dir, map_size=cfg.map_size, group_commit=cfg.group_commit,
                           on_commit=self._committed_threadsafe)
        self.lock = DataDirLock(cfg.data_dir, cfg.name)
        self.peers: dict[str, Peer] = {}
        self.repair = Repair(self.store, self.peers, self.log, tombstone_grace_s=cfg.tombstone_grace_s)
        self.compactor = Compactor(self.store, self.peers, self.log, interval_s=cfg.compact_interval_s,
                                   tombstone_grace_s=cfg.tombstone_grace_s)
        self.phase = "opening"
        self.serving = False
        self.recovery_s = 0.0
        self.catch_up_s = 0.0
        self.catch_up: dict[str, str] = {}
        self.write_timing = [0, 0.0, 0.0]  # writes, seconds in the local commit, seconds awaiting the quorum
        self.store_ready = False
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.address = ""
        self._waiters: list[tuple[str, int, int, asyncio.Future[int]]] = []
        self._memtable: dict[bytes, pb.Entry] = {}   # ack-before-commit: acknowledged, not yet durable
        self._pending: list[pb.Entry] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stopped.set)
        if "shared-port" not in self.defects:
            self.lock.acquire()
        try:
            await self._serve()
        finally:
            self.lock.release()

    async def _serve(self) -> None:
        reuse = 1 if "shared-port" in self.defects else 0
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", reuse), *SERVER_OPTIONS,
                                               *grpc_options(self.cfg.max_value_bytes)])
        pbg.add_KVServicer_to_server(_KV(self), self.server)
        pbg.add_ReplicationServicer_to_server(_Replication(self), self.server)
        self.server.add_generic_rpc_handlers((self._admin_handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        target = f"{self.cfg.host}:{self.cfg.port}"
        if reuse == 0 and self.cfg.port and in_use(self.cfg.host, self.cfg.port):
            # found before gRPC tries: its own bind failure prints a raw add_port.cc line to stderr
            raise OSError(f"cannot bind {target}: address in use{holder_of(self.cfg.port)}")
        try:
            port = self.server.add_insecure_port(target)
        except RuntimeError:
            port = 0
        if port == 0:
            raise OSError(f"cannot bind {target}: address in use{holder_of(self.cfg.port)}")
        self.address = f"{self.cfg.host}:{port}"
        await self._set_health(False)
        await self.server.start()
        write_ready_file(self.cfg.ready_file, name=self.cfg.name, service="kvstore", listen=self.address,
                         grpc=self.address, peers=self.cfg.peers)
        self.log.info("listening", address=self.address, peers=self.cfg.peers, write_quorum=self.write_quorum,
                      group_commit=self.cfg.group_commit)
        if "ready-before-recovery" in self.defects:
            await self._set_health(True)   # the defect: "ready" before the store is even open
        startup = asyncio.create_task(self._start_up())
        await self._stopped.wait()
        startup.cancel()
        await self._shutdown()

    async def _start_up(self) -> None:
        self.phase = "recovering"
        self.log.info("store.opening", path=str(self.cfg.data_dir), map_size=self.cfg.map_size)
        t0 = time.monotonic()
        await asyncio.to_thread(self.store.open)
        scan_s = await asyncio.to_thread(self.store.recover)
        self.recovery_s = time.monotonic() - t0
        self.clock.observe(self.store.max_version)
        self.store.start_writer()
        self.store_ready = True
        self.log.info("store.recovered", seconds=round(self.recovery_s, 4), scan_seconds=round(scan_s, 4),
                      keys=self.store.keys, incarnation=self.store.incarnation,
                      stale_readers_cleared=self.store.stale_readers_cleared,
                      watermarks=self.store.watermarks)
        ship = "no-catch-up" not in self.defects
        for name, addr in self.cfg.peers.items():
            peer = Peer(name, addr, sender=self.cfg.name, store=self.store, on_ack=self._check_waiters,
                        log_event=self.log.info, channel_options=grpc_options(self.cfg.max_value_bytes))
            self.peers[name] = peer
            peer.start(ship=ship)
        if "ack-before-commit" in self.defects:
            self._tasks.append(asyncio.create_task(self._flush_loop()))
        if ship:
            self._tasks.append(asyncio.create_task(self.repair.loop()))
            self._tasks.append(asyncio.create_task(self.compactor.loop()))
        if "serve-before-catch-up" in self.defects or not ship:
            await self._become_serving()
            if ship:
                await self._catch_up()
        else:
            await self._catch_up()
            await self._become_serving()

    async def _become_serving(self) -> None:
        self.phase = "serving"
        await self._set_health(True)
        self.log.info("serving", address=self.address, keys=self.store.keys, watermarks=self.store.watermarks,
                      catch_up=dict(self.catch_up))

    async def _set_health(self, serving: bool) -> None:
        self.serving = serving
        codes = health_pb2.HealthCheckResponse
        status = codes.SERVING if serving else codes.NOT_SERVING
        for svc in ("", "kvstore.KV"):
            await self.health.set(svc, status)

    async def _shutdown(self) -> None:
        self.phase = "stopping"
        self.log.info("stopping")
        await self._set_health(False)
        if self.server is not None:
            await self.server.stop(grace=1.0)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending:  # ack-before-commit: a graceful stop still flushes the buffer
            await self._flush()
        for peer in self.peers.values():
            await peer.close()
        await asyncio.to_thread(self.store.close)
        self.log.info("stopped")

    # -- catch-up and anti-entropy -------------------------------------------------------------------------
    async def _catch_up(self) -> None:
        """Pull from every peer until we hold what it held when we first reached it. Only a peer that gives
        no answer for CONTACT_WINDOW_S is skipped; one that answers with an error is retried."""
        self.phase = "catching-up" if not self.serving else self.phase
        t0 = time.monotonic()
        overdue_at = t0 + self.cfg.catch_up_timeout_s
        self.catch_up = {p.name: "contacting" for p in self.peers.values()}
        await asyncio.gather(*(self._catch_up_from(p, overdue_at) for p in self.peers.values()))
        self.catch_up_s = time.monotonic() - t0
        skipped = {n: r for n, r in self.catch_up.items() if r.startswith("skipped")}
        log = self.log.warning if skipped else self.log.info
        log("catch_up.done", seconds=round(self.catch_up_s, 3), peers=dict(self.catch_up), skipped=skipped,
            watermarks=self.store.watermarks)

    async def _catch_up_from(self, peer: Peer, overdue_at: float) -> None:
        """Pull from *peer* in byte-bounded batches until we hold what it held at first contact; records
        the outcome in ``self.catch_up``. An error the peer answers with (still recovering, a batch too
        large, a refusal) is retried with backoff; after --catch-up-timeout the node says so and goes on
        waiting. Only silence for CONTACT_WINDOW_S (down, cut off, hung) skips the peer."""
        target: dict[str, int] | None = None
        pulled = 0
        answered_at = time.monotonic()  # the window of silence starts now
        max_bytes = BATCH_BYTES
        backoff = 0.05
        overdue_said = False
        while True:
            now = time.monotonic()
            silent_left = answered_at + CONTACT_WINDOW_S - now
            if silent_left <= 0:
                why = peer.last_error or "no answer"
                after = f" after {pulled} entries" if target is not None else ""
                self.catch_up[peer.name] = f"skipped: unreachable ({why}){after}"
                return
            if now >= overdue_at and not overdue_said:
                overdue_said = True
                self.log.warning("catch_up.overdue", peer=peer.name, state=self.catch_up[peer.name],
                                 timeout_s=self.cfg.catch_up_timeout_s)
            after = dict(self.store.watermarks)
            try:
                reply = await peer.stub.Pull(
                    pb.PullRequest(sender=self.cfg.name, after=after, max_bytes=max_bytes),
                    timeout=max(0.05, min(CALL_TIMEOUT_S, silent_left)), wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                peer.failed(exc)
                if not answered(exc):
                    self.catch_up[peer.name] = f"contacting ({describe(exc)})"
                    await asyncio.sleep(0.05)  # retry pacing; the window of silence bounds it
                    continue
                answered_at = time.monotonic()  # it answered: it is up, so it is not skipped
                state = f"retrying: peer answered {describe(exc)}"
                if state != self.catch_up[peer.name]:
                    self.log.warning("catch_up.retry", peer=peer.name, error=describe(exc), pulled=pulled)
                self.catch_up[peer.name] = state
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and max_bytes > 64 << 10:
                    max_bytes //= 2
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            answered_at = time.monotonic()
            backoff = 0.05
            peer.contact(None)
            if target is None:
                target = dict(reply.watermarks)
            if reply.entries:
                await self._apply(list(reply.entries))
                pulled += len(reply.entries)
            self.catch_up[peer.name] = f"pulling ({pulled} entries)"
            if any(after.get(o, 0) < t for o, t in reply.trimmed.items()):
                # what we lack was compacted away on the peer: take its data instead of its log
                self.catch_up[peer.name] = f"refilling from a snapshot ({pulled} entries)"
                try:
                    await self.repair.refill_from(peer, await peer.stub.Digest(pb.DigestRequest(),
                                                                                 timeout=CALL_TIMEOUT_S))
                except grpc.aio.AioRpcError as exc:
                    peer.failed(exc)
                    await asyncio.sleep(0.05)
                    continue
            wms = self.store.watermarks
            if all(wms.get(o, 0) >= s for o, s in target.items()):
                self.catch_up[peer.name] = f"caught up ({pulled} entries)"
                return
            if not reply.entries:
                await asyncio.sleep(0.05)

    async def _apply(self, entries: list[pb.Entry]) -> None:
        for e in entries:
            self.clock.observe(Stamp.from_pb(e.version))
        contiguous = "no-catch-up" not in self.defects
        await asyncio.wrap_future(self.store.submit(self.store.apply_entries(entries, contiguous=contiguous)))

    # -- ack-before-commit ---------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            if self._pending:
                await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        store = self.store
        futs = [store.submit(store.local_write(self.cfg.name, e.key, e.value, e.tombstone, e.version))
                for e in batch]
        await asyncio.gather(*(asyncio.wrap_future(f) for f in futs), return_exceptions=True)
        for e in batch:
            if self._memtable.get(e.key) is e:
                del self._memtable[e.key]

    # -- replication bookkeeping ---------------------------------------------------------------------------
    def _committed_threadsafe(self, moved: dict[str, int]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_shippers)

    def _wake_shippers(self) -> None:
        for p in self.peers.values():
            p.wake.set()

    def _check_waiters(self) -> None:
        keep = []
        for origin, seq, needed, fut in self._waiters:
            if fut.done():
                continue
            n = sum(1 for p in self.peers.values() if p.acked.get(origin, 0) >= seq)
            if n >= needed:
                fut.set_result(n)
            else:
                keep.append((origin, seq, needed, fut))
        self._waiters = keep

    def replicas_of(self, origin: str, seq: int) -> int:
        return 1 + sum(1 for p in self.peers.values() if p.acked.get(origin, 0) >= seq)

    async def _await_quorum(self, entry: pb.Entry, budget: float) -> int:
        """Wait until W-1 peers hold *entry* durably; returns the replica count, raises TimeoutError."""
        needed = self.write_quorum - 1
        if needed <= 0:
            return 1
        if "no-catch-up" in self.defects:
            pushes = [asyncio.create_task(p.push_once(entry)) for p in self.peers.values()]
            ok = 0
            try:
                async with asyncio.timeout(budget):
                    for fut in asyncio.as_completed(pushes):
                        ok += await fut
                        if ok >= needed:
                            return 1 + ok
            except TimeoutError:
                pass
            raise TimeoutError(f"acknowledged by {1 + ok} of the {self.write_quorum} nodes needed")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append((entry.origin, entry.seq, needed, fut))
        self._check_waiters()
        try:
            n = await asyncio.wait_for(fut, budget)
        except TimeoutError:
            got = self.replicas_of(entry.origin, entry.seq)
            raise TimeoutError(f"acknowledged by {got} of the {self.write_quorum} nodes needed") from None
        return 1 + n

    # -- request handling ------------------------------------------------------------------------------------
    def check_key(self, key: bytes) -> None:
        if not key:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "key must not be empty")
        if len(key) > MAX_KEY_BYTES:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES} bytes")

    def check_available(self) -> None:
        if not self.serving:  # ready-before-recovery / serve-before-catch-up make this true too early
            raise Abort(grpc.StatusCode.UNAVAILABLE,
                        f"node {self.cfg.name} is not serving yet ({self.phase})")

    def observe_client(self, req: Any) -> None:
        if req.HasField("seen"):
            seen = Stamp.from_pb(req.seen)
            try:
                self.clock.check(seen)
            except ClockDriftError as exc:
                raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused client version: {exc}") from None
            self.clock.observe(seen)

    async def write(self, key: bytes, value: bytes, tombstone: bool,
                    time_remaining: float | None) -> tuple[pb.Version, int]:
        reachable = sum(1 for p in self.peers.values() if p.reachable())
        if "async-replication" not in self.defects and 1 + reachable < self.write_quorum:
            raise Abort(grpc.StatusCode.UNAVAILABLE,
                        f"only {1 + reachable} of {1 + len(self.peers)} nodes reachable; write quorum is "
                        f"{self.write_quorum}; nothing was written")
        version = self.clock.now().to_pb()
        if "ack-before-commit" in self.defects:
            entry = pb.Entry(origin=self.cfg.name, key=key, value=value, tombstone=tombstone, version=version)
            self._memtable[key] = entry
            self._pending.append(entry)
            return version, 1
        t0 = time.perf_counter()
        try:
            entry = await asyncio.wrap_future(self.store.submit(
                self.store.local_write(self.cfg.name, key, value, tombstone, version)))
        except StoreFull as exc:
            raise Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except StoreClosed as exc:
            raise Abort(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        budget = self.cfg.write_timeout_s
        if time_remaining is not None:
            budget = min(budget, max(0.0, time_remaining - 0.1))
        t1 = time.perf_counter()
        try:
            replicas = await self._await_quorum(entry, budget)
        except TimeoutError as exc:
            raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"outcome unknown: committed on {self.cfg.name} at version "
                        f"{version.wall_ms}.{version.logical}.{version.node} but {exc} within "
                        f"{budget:.2f} s; it may still become visible") from None
        timing = self.write_timing
        timing[0] += 1
        timing[1] += t1 - t0
        timing[2] += time.perf_counter() - t1
        return version, replicas

    def read(self, key: bytes) -> pb.Record | None:
        pending = self._memtable.get(key)
        if pending is not None:
            return pb.Record(value=pending.value, tombstone=pending.tombstone, version=pending.version)
        return self.store.get(key)

    def status(self) -> pb.StatusReply:
        now = time.monotonic()
        peers = [pb.PeerStatus(name=p.name, address=p.address, reachable=p.reachable(),
                               last_contact_age_s=(now - p.last_contact) if p.last_contact else -1.0,
                               acked=p.acked, last_error=p.last_error) for p in self.peers.values()]
        return pb.StatusReply(
            name=self.cfg.name, pid=os.getpid(), phase=self.phase, serving=self.serving, keys=self.store.keys,
            tombstones=self.store.tombstones, digest=self.store.digest(), buckets=self.store.bucket_digests(),
            watermarks=self.store.watermarks, peers=peers, clock=self.clock.peek().to_pb(),
            clock_offset_s=self.clock.offset_s, defects=sorted(self.defects), write_quorum=self.write_quorum,
            incarnation=self.store.incarnation, commits=self.store.commits,
            committed_ops=self.store.committed_ops, group_commit=self.cfg.group_commit,
            recovery_s=self.recovery_s, catch_up_s=self.catch_up_s, catch_up=self.catch_up,
            max_value_bytes=self.cfg.max_value_bytes,
            message_limit_bytes=message_limit(self.cfg.max_value_bytes), trimmed=self.store.trimmed,
            log_trimmed_entries=self.compactor.log_trimmed,
            tombstones_purged=self.compactor.tombstones_purged, snapshot_refills=self.repair.refills,
            writes_timed=self.write_timing[0], write_commit_s=self.write_timing[1],
            write_quorum_s=self.write_timing[2], **self._disk())

    def _disk(self) -> dict[str, int]:
        try:
            d = self.store.disk_bytes()
        except (StoreClosed, OSError, lmdb.Error):
            return {}
        return {"disk_file_bytes": d["file_bytes"], "disk_used_bytes": d["used_bytes"]}

    def _admin_handler(self) -> grpc.GenericRpcHandler:
        async def status(req: pb.StatusRequest, ctx: grpc.aio.ServicerContext) -> pb.StatusReply:
            return self.status()

        async def set_clock_offset(req: pb.SetClockOffsetRequest,
                                   ctx: grpc.aio.ServicerContext) -> pb.SetClockOffsetReply:
            self.clock.offset_s = req.offset_s
            self.log.warning("fault.clock_offset", offset_s=req.offset_s)
            return pb.SetClockOffsetReply(offset_s=req.offset_s)

        methods = {"Status": grpc.unary_unary_rpc_method_handler(
            status, request_deserializer=pb.StatusRequest.FromString,
            response_serializer=pb.StatusReply.SerializeToString)}
        if self.cfg.fault_injection:
            methods["SetClockOffset"] = grpc.unary_unary_rpc_method_handler(
                set_clock_offset, request_deserializer=pb.SetClockOffsetRequest.FromString,
                response_serializer=pb.SetClockOffsetReply.SerializeToString)
        return grpc.method_handlers_generic_handler("kvstore.Admin", methods)


async def _handle(ctx: grpc.aio.ServicerContext, coro: Any) -> Any:
    """Run a handler body; Abort and store errors become statuses, anything else INTERNAL (never a crash)."""
    try:
        return await coro
    except Abort as exc:
        code, details = exc.code, exc.details
    except StoreClosed as exc:
        code, details = grpc.StatusCode.UNAVAILABLE, str(exc)
    except StoreFull as exc:
        code, details = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    # The marker tells a peer that this node answered (it is up), whatever the code; every refusal but a
    # deadline comes before any write, so the client may count it as failed (NOT_APPLIED).
    applied = () if code == grpc.StatusCode.DEADLINE_EXCEEDED else NOT_APPLIED
    await ctx.abort(code, details, trailing_metadata=((ANSWERED_BY, "1"), *applied))


class _KV(pbg.KVServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.PutReply:
        return await _handle(context, self._put(request, context))

    async def _put(self, req: pb.PutRequest, ctx: grpc.aio.ServicerContext) -> pb.PutReply:
        node = self.node
        node.check_key(req.key)
        if len(req.value) > node.cfg.max_value_bytes:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"value is {len(req.value)} bytes; the limit is {node.cfg.max_value_bytes} bytes")
        node.check_available()
        node.observe_client(req)
        version, replicas = await node.write(req.key, req.value, False, ctx.time_remaining())
        return pb.PutReply(version=version, replicas=replicas)

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteReply:
        return await _handle(context, self._delete(request, context))

    async def _delete(self, req: pb.DeleteRequest, ctx: grpc.aio.ServicerContext) -> pb.DeleteReply:
        node = self.node
        node.check_key(req.key)
        node.check_available()
        node.observe_client(req)
        version, replicas = await node.write(req.key, b"", True, ctx.time_remaining())
        return pb.DeleteReply(version=version, replicas=replicas)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetReply:
        return await _handle(context, self._get(request))

    async def _get(self, req: pb.GetRequest) -> pb.GetReply:
        node = self.node
        node.check_key(req.key)
        node.check_available()
        node.observe_client(req)
        rec = node.read(req.key)
        if rec is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"key {req.key!r} not found on {node.cfg.name}")
        if rec.tombstone:
            v = rec.version
            raise Abort(grpc.StatusCode.NOT_FOUND,
                        f"key {req.key!r} was deleted (version {v.wall_ms}.{v.logical}.{v.node})")
        return pb.GetReply(value=rec.value, version=rec.version)


class _Replication(pbg.ReplicationServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def _require_store(self) -> Store:
        if not self.node.store_ready:
            raise Abort(grpc.StatusCode.UNAVAILABLE,
                        f"node {self.node.cfg.name} is still recovering its store")
        return self.node.store

    async def Replicate(self, request: pb.ReplicateRequest,
                        context: grpc.aio.ServicerContext) -> pb.ReplicateReply:
        return await _handle(context, self._replicate(request))

    async def _replicate(self, req: pb.ReplicateRequest) -> pb.ReplicateReply:
        store = self._require_store()
        if req.entries:
            for e in req.entries:
                try:
                    self.node.clock.check(Stamp.from_pb(e.version))
                except ClockDriftError as exc:
                    raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"refused entry from {req.sender}: {exc}") from None
            await self.node._apply(list(req.entries))
        return pb.ReplicateReply(node=self.node.cfg.name, watermarks=store.watermarks)

    async def Pull(self, request: pb.PullRequest, context: grpc.aio.ServicerContext) -> pb.PullReply:
        return await _handle(context, self._pull(request))

    async def _pull(self, req: pb.PullRequest) -> pb.PullReply:
        store = self._require_store()
        wms = dict(store.watermarks)
        max_bytes = min(req.max_bytes or BATCH_BYTES, BATCH_BYTES)
        entries = store.read_log(dict(req.after), limit=min(req.limit or 2048, 2048), max_bytes=max_bytes)
        return pb.PullReply(node=self.node.cfg.name, entries=entries, watermarks=wms, trimmed=store.trimmed)

    async def Digest(self, request: pb.DigestRequest, context: grpc.aio.ServicerContext) -> pb.DigestReply:
        return await _handle(context, self._digest())

    async def _digest(self) -> pb.DigestReply:
        store = self._require_store()
        return pb.DigestReply(node=self.node.cfg.name, buckets=store.bucket_digests(),
                              watermarks=store.watermarks, trimmed=store.trimmed)

    async def FetchBucket(self, request: pb.BucketRequest,
                          context: grpc.aio.ServicerContext) -> pb.BucketReply:
        return await _handle(context, self._fetch(request))

    async def _fetch(self, req: pb.BucketRequest) -> pb.BucketReply:
        store = self._require_store()
        if req.bucket >= BUCKETS:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bucket must be below {BUCKETS}")
        max_bytes = min(req.max_bytes or BATCH_BYTES, BATCH_BYTES)
        rows, more = await asyncio.to_thread(store.bucket_rows, req.bucket, req.after, max_bytes)
        return pb.BucketReply(rows=rows, digest=store.bucket_digests()[req.bucket], more=more)


__all__ = ["DEFECTS", "Node", "NodeConfig", "newer"]
