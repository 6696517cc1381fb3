"""Compaction: trim each origin's log up to what every peer holds durably, and remove tombstones every
peer holds once they are older than the grace period. LMDB reuses the freed pages, so the disk stays
bounded under a steady workload."""

from __future__ import annotations

import asyncio
import time

from servicekit import JsonLogger

from kvstore.replication import Peer
from kvstore.storage import Store, StoreClosed, StoreFull


class Compactor:
    """One compaction round every *interval_s*; counts what it removed."""

    def __init__(self, store: Store, peers: dict[str, Peer], log: JsonLogger, *, interval_s: float,
                 tombstone_grace_s: float) -> None:
        self.store = store
        self.peers = peers
        self.log = log
        self.interval_s = interval_s
        self.tombstone_grace_s = tombstone_grace_s
        self.log_trimmed = 0
        self.tombstones_purged = 0

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.compact()
            except (StoreClosed, StoreFull) as exc:
                self.log.warning("compaction.failed", error=str(exc))

    def held_by_all(self) -> dict[str, int]:
        """Per origin: the highest position we and every peer hold durably (0 for a silent peer)."""
        return {o: min([wm, *(p.acked.get(o, 0) for p in self.peers.values())])
                for o, wm in self.store.watermarks.items()}

    async def compact(self) -> None:
        store = self.store
        upto = self.held_by_all()
        trim = {o: t for o, t in upto.items() if t > store.trimmed.get(o, 0)}
        deleted = purged = 0
        if trim:
            deleted = await asyncio.wrap_future(store.submit(store.trim_log(trim)))
        before_ms = int((time.time() - self.tombstone_grace_s) * 1000)
        keys = await asyncio.to_thread(store.tombstones_to_purge, upto, before_ms)
        if keys:
            purged = await asyncio.wrap_future(store.submit(store.purge_tombstones(keys, upto, before_ms)))
        self.log_trimmed += deleted
        self.tombstones_purged += purged
        if deleted or purged:
            self.log.info("compaction", log_entries=deleted, tombstones=purged, trimmed=dict(store.trimmed))
