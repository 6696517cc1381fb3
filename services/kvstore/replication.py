"""Peers: one channel per peer and a shipper that feeds it each origin's log from a durable cursor.

The cursor for a peer is what that peer acknowledged after committing durably (its watermarks in the
reply), so a peer that was down or cut off is fed from where it stopped once it answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import grpc

from kvstore.limits import BATCH_BYTES
from kvstore.proto import kvstore_pb2 as pb
from kvstore.proto import kvstore_pb2_grpc as pbg
from kvstore.storage import Store

# Every channel: keepalive (notices a dead link) and reconnect backoff of at most about a second.
# gRPC also takes min_reconnect_backoff as the time one connection attempt may take (its "min connect
# timeout"): at 100 ms, a loaded machine failed fresh connections with "connection attempt timed out
# before receiving SETTINGS frame" or "tcp handshaker shutdown". Retries still start after 100 ms.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]
HEARTBEAT_S = 0.25
REACH_WINDOW_S = 1.5
CALL_TIMEOUT_S = 2.0
PIPELINE = 2  # Replicate rounds in flight to one peer
ANSWERED_BY = "kv-node"  # trailing metadata on every error a node returns itself: the peer did answer
_NO_ANSWER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def answered(exc: grpc.aio.AioRpcError) -> bool:
    """True when the peer itself answered with this error (it is up); False when no answer came back
    (connection refused or cut, no reply before the deadline): only then is the peer unreachable."""
    if any(k == ANSWERED_BY for k, _ in (exc.trailing_metadata() or ())):
        return True
    return exc.code() not in _NO_ANSWER


def describe(exc: grpc.aio.AioRpcError) -> str:
    """One line: the status and its message."""
    return f"{exc.code().name}: {exc.details()}"


class Peer:
    """A replication target: reachability, what it has acknowledged, and the shipper task."""

    def __init__(self, name: str, address: str, *, sender: str, store: Store,
                 on_ack: Callable[[], None], log_event: Callable[..., None],
                 channel_options: Sequence[tuple[str, int]] = ()) -> None:
        self.name = name
        self.address = address
        self.sender = sender
        self.store = store
        self.on_ack = on_ack
        self.log_event = log_event
        self.channel = grpc.aio.insecure_channel(address, options=[*CHANNEL_OPTIONS, *channel_options])
        self.stub = pbg.ReplicationStub(self.channel)
        self.acked: dict[str, int] = {}
        self.last_contact: float | None = None
        self.last_error = ""
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._saving = False

    def reachable(self) -> bool:
        return self.last_contact is not None and time.monotonic() - self.last_contact < REACH_WINDOW_S

    def contact(self, watermarks: dict[str, int] | None) -> None:
        """Record a successful exchange and, from its reply, what the peer holds durably."""
        was = self.reachable()
        self.last_contact = time.monotonic()
        self.last_error = ""
        if not was:
            self.log_event("peer.reachable", peer=self.name)
        if watermarks is not None and watermarks != self.acked:
            self.acked = dict(watermarks)
            self.on_ack()
            self._persist_cursor()

    def failed(self, exc: grpc.aio.AioRpcError) -> None:
        """A failed exchange makes the peer unreachable until the next success."""
        err = describe(exc)
        if err != self.last_error or self.last_contact is not None:
            self.log_event("peer.error", peer=self.name, error=err)
        self.last_error = err
        self.last_contact = None

    def _persist_cursor(self) -> None:
        if self._saving or self.store.env is None:
            return
        self._saving = True
        fut = self.store.submit(self.store.save_cursor(self.name, dict(self.acked)))
        asyncio.wrap_future(fut).add_done_callback(self._saved)

    def _saved(self, fut: asyncio.Future[None]) -> None:
        self._saving = False
        if not fut.cancelled() and fut.exception() is None:
            self.store.cursors[self.name] = dict(self.acked)

    def start(self, *, ship: bool) -> None:
        """Start the loop: ship the log (``ship``) or only heartbeat (the ``no-catch-up`` defect)."""
        self.acked = dict(self.store.cursors.get(self.name, {}))  # resume from the durable cursor
        loop = self._ship_loop() if ship else self._heartbeat_loop()
        self.task = asyncio.create_task(loop, name=f"ship->{self.name}")

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                reply = await self.stub.Replicate(pb.ReplicateRequest(sender=self.sender),
                                                  timeout=CALL_TIMEOUT_S)
                self.contact(dict(reply.watermarks))
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), HEARTBEAT_S)
                except TimeoutError:
                    pass
            except grpc.aio.AioRpcError as exc:
                self.failed(exc)
                await asyncio.sleep(HEARTBEAT_S)  # retry pacing; reconnect backoff is the channel's

    async def _ship_loop(self) -> None:
        """Keep up to PIPELINE byte-bounded batches in flight, each starting where the previous one
        ended (``sent``), so a new entry leaves at once instead of after the round in progress. A failed
        round, or replies that leave the peer short of what was sent, restart from what it acknowledged.
        An idle peer gets an empty batch (a heartbeat) every HEARTBEAT_S."""
        sent = dict(self.acked)
        inflight: set[asyncio.Task[bool]] = set()
        last_send = 0.0
        while True:
            try:
                self.wake.clear()
                while len(inflight) < PIPELINE:
                    entries = self.store.read_log(sent, limit=256, max_bytes=BATCH_BYTES)
                    if not entries and (inflight or time.monotonic() - last_send < HEARTBEAT_S):
                        break
                    for e in entries:
                        sent[e.origin] = max(sent.get(e.origin, 0), e.seq)
                    inflight.add(asyncio.create_task(self._send(entries)))
                    last_send = time.monotonic()
                    if not entries:
                        break
                wake = asyncio.ensure_future(self.wake.wait())
                idle = max(0.0, last_send + HEARTBEAT_S - time.monotonic())
                done, _ = await asyncio.wait({*inflight, wake}, timeout=None if inflight else idle,
                                             return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                failed = False
                for t in done & inflight:
                    inflight.discard(t)
                    failed |= not t.result()
                if failed:
                    await asyncio.gather(*inflight, return_exceptions=True)
                    inflight.clear()
                    sent = dict(self.acked)
                    await asyncio.sleep(HEARTBEAT_S)  # retry pacing; reconnect backoff is the channel's
                elif not inflight and any(self.acked.get(o, 0) < s for o, s in sent.items()):
                    sent = dict(self.acked)  # the peer did not take everything sent: resend from its position
            except Exception as exc:  # never let one bad round end replication to this peer
                self.log_event("shipper.error", peer=self.name, error=repr(exc))
                for t in inflight:
                    t.cancel()
                await asyncio.gather(*inflight, return_exceptions=True)
                inflight.clear()
                sent = dict(self.acked)
                await asyncio.sleep(HEARTBEAT_S)

    async def _send(self, entries: list[pb.Entry]) -> bool:
        """One Replicate round; True when the peer answered (its reply moves ``acked``)."""
        try:
            reply = await self.stub.Replicate(pb.ReplicateRequest(sender=self.sender, entries=entries),
                                              timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            self.failed(exc)
            return False
        self.contact(dict(reply.watermarks))
        return True

    async def push_once(self, entry: pb.Entry) -> bool:
        """Fire-and-forget delivery (``no-catch-up``): one attempt, never repeated."""
        try:
            await self.stub.Replicate(pb.ReplicateRequest(sender=self.sender, entries=[entry]),
                                      timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            self.failed(exc)
            self.log_event("replication.dropped", peer=self.name, origin=entry.origin, seq=entry.seq)
            return False
        self.contact(None)
        return True

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        await self.channel.close(grace=None)
