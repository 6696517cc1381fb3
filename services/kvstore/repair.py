"""Anti-entropy and snapshot refills: compare bucket digests with a peer and take its newer rows, page by
page; when the peer's log no longer holds what we lack (compacted), take its data and its positions."""

from __future__ import annotations

import asyncio
import time

import grpc
from servicekit import JsonLogger

from kvstore.proto import kvstore_pb2 as pb
from kvstore.replication import CALL_TIMEOUT_S, Peer
from kvstore.storage import BUCKETS, Store

ANTI_ENTROPY_S = 1.0


class Repair:
    """Anti-entropy with every reachable peer each ANTI_ENTROPY_S, and the snapshot refill."""

    def __init__(self, store: Store, peers: dict[str, Peer], log: JsonLogger, *,
                 tombstone_grace_s: float) -> None:
        self.store = store
        self.peers = peers
        self.log = log
        self.tombstone_grace_s = tombstone_grace_s
        self.refills = 0

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(ANTI_ENTROPY_S)
            for peer in list(self.peers.values()):
                if not peer.reachable():
                    continue
                try:
                    await self.with_peer(peer)
                except grpc.aio.AioRpcError as exc:
                    peer.failed(exc)

    async def with_peer(self, peer: Peer) -> None:
        """When the peer holds the same log positions as we do but a bucket digest differs, take its
        newer rows of that bucket; when it compacted away what we lack, refill from its data."""
        reply = await peer.stub.Digest(pb.DigestRequest(), timeout=CALL_TIMEOUT_S)
        if any(self.store.watermarks.get(o, 0) < t for o, t in reply.trimmed.items()):
            await self.refill_from(peer, reply)  # its log no longer has what we lack
            return
        if dict(reply.watermarks) != self.store.watermarks:
            return  # log shipping is still moving; compare once the logs agree
        differing = self._differing(reply)
        repaired = await self._fetch_buckets(peer, differing)
        if repaired:
            self.log.warning("anti_entropy.mismatch", peer=peer.name, buckets=differing, repaired=repaired)

    async def refill_from(self, peer: Peer, digest: pb.DigestReply) -> None:
        """Snapshot refill: the peer compacted away log entries we never got. Take its rows of every
        bucket that differs (they reflect every write up to its watermarks in *digest*, taken before),
        then move our watermarks to those."""
        gap = {o: wm for o, wm in digest.watermarks.items()
               if self.store.watermarks.get(o, 0) < digest.trimmed.get(o, 0)}
        if not gap:
            return
        t0 = time.monotonic()
        differing = self._differing(digest)
        rows = await self._fetch_buckets(peer, differing)
        await asyncio.wrap_future(self.store.submit(self.store.adopt_snapshot(gap)))
        self.refills += 1
        self.log.warning("snapshot.refill", peer=peer.name, origins=gap, buckets=len(differing), rows=rows,
                         seconds=round(time.monotonic() - t0, 3))

    def _differing(self, reply: pb.DigestReply) -> list[int]:
        ours = self.store.bucket_digests()
        return [b for b in range(BUCKETS) if reply.buckets[b] != ours[b]]

    async def _fetch_buckets(self, peer: Peer, buckets: list[int]) -> int:
        """Take the peer's newer rows of *buckets*, page by page (each page bounded in bytes)."""
        repaired = 0
        purged_before_ms = int((time.time() - self.tombstone_grace_s) * 1000)
        for b in buckets:
            after = b""
            more = True
            while more:
                page = await peer.stub.FetchBucket(pb.BucketRequest(bucket=b, after=after),
                                                   timeout=CALL_TIMEOUT_S)
                rows = list(page.rows)
                if rows:
                    repaired += await asyncio.wrap_future(
                        self.store.submit(self.store.repair_rows(rows, purged_before_ms)))
                    after = rows[-1].key
                more = page.more and bool(rows)
        return repaired
