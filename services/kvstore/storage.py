"""The node's durable state in one LMDB environment, written by ONE thread with group commit.

Tables: ``data`` (key → Record, the current version of each key, tombstones included), ``log``
(origin NUL seq → Entry, every write each origin made, as received), ``meta`` (per-origin watermark,
per-peer cursors, incarnation). A write and every watermark it moves commit in one transaction; each
waiter is answered only after that transaction has been fsynced (``sync=True, metasync=True``).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lmdb

from kvstore.clock import ZERO, Stamp
from kvstore.proto import kvstore_pb2 as pb

BUCKETS = 64
MAX_KEY_BYTES = 511  # LMDB's compiled-in maximum key size
_U64 = struct.Struct(">Q")
Op = Callable[[Any, "Effects"], Any]


class StoreFull(RuntimeError):
    """The LMDB map is full (raise --map-size)."""


class StoreClosed(RuntimeError):
    """The store is not open (still recovering, or shutting down)."""


def log_key(origin: str, seq: int) -> bytes:
    return origin.encode() + b"\0" + _U64.pack(seq)


def bucket_of(key: bytes) -> int:
    return hashlib.blake2b(key, digest_size=2).digest()[0] % BUCKETS


def row_hash(key: bytes, rec: pb.Record) -> int:
    """Hash of a key's current state; a bucket digest is the XOR of its rows' hashes."""
    h = hashlib.blake2b(key, digest_size=8)
    h.update(b"\0T" if rec.tombstone else b"\0V")
    h.update(rec.value)
    h.update(f"{rec.version.wall_ms}.{rec.version.logical}.{rec.version.node}".encode())
    return int.from_bytes(h.digest(), "big")


def newer(a: pb.Version, b: pb.Version) -> bool:
    """True when version *a* orders after *b*."""
    return (a.wall_ms, a.logical, a.node) > (b.wall_ms, b.logical, b.node)


@dataclass
class Effects:
    """In-memory consequences of one operation, applied only after its transaction committed."""

    bucket_xor: dict[int, int] = field(default_factory=dict)
    keys_delta: int = 0
    tombstones_delta: int = 0
    watermarks: dict[str, int] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)
    tombstone_changes: list[tuple[bytes, bool]] = field(default_factory=list)  # (key, is now a tombstone)
    max_version: Stamp = ZERO


class Store:
    """One LMDB environment per node; open() + recover(), then submit() operations to the writer."""

    def __init__(self, path: Path, *, map_size: int, group_commit: bool = True,
                 on_commit: Callable[[dict[str, int]], None] | None = None) -> None:
        self.path = Path(path)
        self.map_size = map_size
        self.group_commit = group_commit
        self.on_commit = on_commit
        self.env: lmdb.Environment | None = None
        self.watermarks: dict[str, int] = {}
        self.trimmed: dict[str, int] = {}  # per origin: log entries up to here were compacted away
        self.tombstone_keys: set[bytes] = set()  # so compaction need not scan every row
        self.cursors: dict[str, dict[str, int]] = {}
        self.buckets = [0] * BUCKETS
        self.keys = 0
        self.tombstones = 0
        self.max_version = ZERO
        self.incarnation = 0
        self.commits = 0
        self.committed_ops = 0
        self.stale_readers_cleared = 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the environment, clear reader slots of dead processes, count this incarnation."""
        self.path.mkdir(parents=True, exist_ok=True)
        env = lmdb.open(str(self.path), map_size=self.map_size, max_dbs=4, sync=True, metasync=True,
                        subdir=True, lock=True)
        self.stale_readers_cleared = env.reader_check()
        # Begin the write transaction first: it waits (without the GIL) while another process holds the
        # environment's writer lock; open_db() on its own would wait holding the GIL.
        with env.begin(write=True) as txn:
            self._data = env.open_db(b"data", txn=txn)
            self._log = env.open_db(b"log", txn=txn)
            self._meta = env.open_db(b"meta", txn=txn)
            raw = txn.get(b"incarnation", db=self._meta)
            self.incarnation = (_U64.unpack(raw)[0] if raw else 0) + 1
            txn.put(b"incarnation", _U64.pack(self.incarnation), db=self._meta)
        self.env = env

    def recover(self) -> float:
        """Rebuild the in-memory state (digest buckets, counts, watermarks, cursors, highest version)
        by scanning the store; returns the seconds it took."""
        assert self.env is not None
        t0 = time.monotonic()
        buckets = [0] * BUCKETS
        keys = tombs = 0
        top = ZERO
        tombstone_keys = set()
        with self.env.begin() as txn:
            for key, raw in txn.cursor(db=self._data):
                rec = pb.Record.FromString(raw)
                buckets[bucket_of(key)] ^= row_hash(key, rec)
                if rec.tombstone:
                    tombs += 1
                    tombstone_keys.add(bytes(key))
                else:
                    keys += 1
                top = max(top, Stamp.from_pb(rec.version))
            for key, raw in txn.cursor(db=self._meta):
                if key.startswith(b"wm:"):
                    self.watermarks[key[3:].decode()] = _U64.unpack(raw)[0]
                elif key.startswith(b"trim:"):
                    self.trimmed[key[5:].decode()] = _U64.unpack(raw)[0]
                elif key.startswith(b"cursor:"):
                    peer, _, origin = key[7:].decode().partition("\0")
                    self.cursors.setdefault(peer, {})[origin] = _U64.unpack(raw)[0]
            # every origin's log must reach its watermark: verify the heads
            for origin, wm in self.watermarks.items():
                if wm > self.trimmed.get(origin, 0) and txn.get(log_key(origin, wm), db=self._log) is None:
                    raise RuntimeError(f"log of origin {origin} is missing entry {wm}: store is corrupt")
        self.buckets, self.keys, self.tombstones, self.max_version = buckets, keys, tombs, top
        self.tombstone_keys = tombstone_keys
        return time.monotonic() - t0

    def start_writer(self) -> None:
        self._writer = threading.Thread(target=self._writer_loop, name="lmdb-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Let the writer finish what is queued, then close the environment."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        if self.env is not None:
            self.env.close()
            self.env = None

    # -- reads (any thread) ----------------------------------------------------------------------------
    def get(self, key: bytes) -> pb.Record | None:
        """The key's current record; None when absent (and, before open(), for every key)."""
        if self.env is None:
            return None
        with self.env.begin() as txn:
            raw = txn.get(key, db=self._data)
        return pb.Record.FromString(raw) if raw is not None else None

    def read_log(self, after: dict[str, int], limit: int = 512, max_bytes: int | None = None,
                 origins: Iterable[str] | None = None) -> list[pb.Entry]:
        """Log entries with a sequence above after[origin] (0 if absent), per origin in order: at most
        *limit* entries and, with *max_bytes*, no more than that many bytes (but always one entry)."""
        env = self._env()
        out: list[pb.Entry] = []
        size = 0
        budget = max_bytes if max_bytes is not None else float("inf")
        wms = dict(self.watermarks)
        with env.begin() as txn:
            cur = txn.cursor(db=self._log)
            for origin in (origins if origins is not None else sorted(wms)):
                start = after.get(origin, 0)
                if wms.get(origin, 0) <= start or start < self.trimmed.get(origin, 0):
                    continue  # nothing new, or compacted away (the reader needs a snapshot instead)
                prefix = origin.encode() + b"\0"
                if not cur.set_range(log_key(origin, start + 1)):
                    continue
                full = False
                for k, raw in cur:
                    if not k.startswith(prefix):
                        break
                    if len(out) >= limit or (out and size + len(raw) > budget):
                        full = True
                        break
                    out.append(pb.Entry.FromString(raw))
                    size += len(raw) + 8  # the repeated field's tag and length
                if full:
                    break
        return out

    def bucket_rows(self, bucket: int, after: bytes = b"",
                    max_bytes: int | None = None) -> tuple[list[pb.Entry], bool]:
        """The bucket's rows with a key after *after*, in key order, up to about *max_bytes* (always one);
        returns (rows, more) where *more* says the page was cut short."""
        env = self._env()
        rows: list[pb.Entry] = []
        size = 0
        budget = max_bytes if max_bytes is not None else float("inf")
        with env.begin() as txn:
            cur = txn.cursor(db=self._data)
            found = cur.set_range(after) if after else cur.first()
            if found and after and cur.key() == after:
                found = cur.next()
            while found:
                key, raw = cur.item()
                if bucket_of(key) == bucket:
                    if rows and size + len(raw) + len(key) > budget:
                        return rows, True
                    rec = pb.Record.FromString(raw)
                    rows.append(pb.Entry(origin=rec.origin, seq=rec.seq, key=key, value=rec.value,
                                         tombstone=rec.tombstone, version=rec.version))
                    size += len(raw) + len(key) + 16
                found = cur.next()
        return rows, False

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for b in self.buckets:
            h.update(_U64.pack(b))
        return h.hexdigest()

    def bucket_digests(self) -> list[str]:
        return [f"{b:016x}" for b in self.buckets]

    def _env(self) -> lmdb.Environment:
        if self.env is None:
            raise StoreClosed("store is not open")
        return self.env

    # -- writes (queued to the writer thread) ----------------------------------------------------------
    def submit(self, op: Callable[[Any, Effects], Any]) -> concurrent.futures.Future[Any]:
        """Queue *op(txn, effects)*; the future resolves after the transaction holding it is durable."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._writer is None:
            fut.set_exception(StoreClosed("store is not open for writing"))
        else:
            self._queue.put((op, fut))
        return fut

    def local_write(self, origin: str, key: bytes, value: bytes, tombstone: bool,
                    version: pb.Version) -> Callable[[Any, Effects], pb.Entry]:
        """Operation: append the origin's next log entry and apply it (one transaction)."""
        def op(txn: Any, fx: Effects) -> pb.Entry:
            seq = self._wm(txn, origin) + 1
            entry = pb.Entry(origin=origin, seq=seq, key=key, value=value, tombstone=tombstone,
                             version=version)
            self._append(txn, fx, entry)
            return entry
        return op

    def apply_entries(self, entries: list[pb.Entry], *,
                      contiguous: bool = True) -> Callable[[Any, Effects], dict[str, int]]:
        """Operation: append and apply replicated entries; with *contiguous*, an entry that would leave a
        gap in its origin's log stops that origin (the sender restarts from our watermark)."""
        def op(txn: Any, fx: Effects) -> dict[str, int]:
            blocked: set[str] = set()
            for e in entries:
                if e.origin in blocked:
                    continue
                wm = self._wm(txn, e.origin)
                if contiguous and e.seq <= wm:
                    continue
                if contiguous and e.seq != wm + 1:
                    blocked.add(e.origin)
                    continue
                self._append(txn, fx, e)
            return {}
        return op

    def repair_rows(self, rows: list[pb.Entry],
                    purged_before_ms: int = 0) -> Callable[[Any, Effects], int]:
        """Operation (anti-entropy): take each row whose version is newer than ours; returns how many.
        A tombstone older than *purged_before_ms* for a key we do not hold is not taken: compaction
        removes such tombstones, so taking it back would only undo that."""
        def op(txn: Any, fx: Effects) -> int:
            n = 0
            for r in rows:
                if (r.tombstone and r.version.wall_ms < purged_before_ms
                        and txn.get(r.key, db=self._data) is None):
                    continue
                n += self._apply_row(txn, fx, r)
            return n
        return op

    # -- compaction ------------------------------------------------------------------------------------
    def trim_log(self, upto: dict[str, int], max_entries: int = 20000) -> Callable[[Any, Effects], int]:
        """Operation: delete each origin's log entries up to upto[origin] (every peer holds them
        durably), at most *max_entries* in one go; returns how many were deleted."""
        def op(txn: Any, fx: Effects) -> int:
            deleted = 0
            for origin, end in upto.items():
                start = self._trim(txn, origin)
                end = min(end, self._wm(txn, origin))
                if end <= start or deleted >= max_entries:
                    continue
                cur = txn.cursor(db=self._log)
                prefix = origin.encode() + b"\0"
                last = start
                if cur.set_range(log_key(origin, start + 1)):
                    while deleted < max_entries:
                        k = cur.key()
                        if not k.startswith(prefix) or _U64.unpack(k[len(prefix):])[0] > end:
                            break
                        last = _U64.unpack(k[len(prefix):])[0]
                        deleted += 1
                        if not cur.delete():
                            break
                done = end if deleted < max_entries else last
                txn.put(b"trim:" + origin.encode(), _U64.pack(done), db=self._meta)
                fx.trimmed[origin] = done
            return deleted
        return op

    def tombstones_to_purge(self, upto: dict[str, int], before_ms: int, limit: int = 10000) -> list[bytes]:
        """Keys whose row is a tombstone older than *before_ms* that every peer holds (its log position
        is at or below upto[origin]). Reads only the tombstones' rows."""
        env = self._env()
        out = []
        with env.begin() as txn:
            for key in list(self.tombstone_keys):
                raw = txn.get(key, db=self._data)
                if raw is None:
                    continue
                rec = pb.Record.FromString(raw)
                if (rec.tombstone and rec.version.wall_ms < before_ms
                        and rec.seq <= upto.get(rec.origin, 0)):
                    out.append(key)
                    if len(out) >= limit:
                        break
        return out

    def purge_tombstones(self, keys: list[bytes], upto: dict[str, int],
                         before_ms: int) -> Callable[[Any, Effects], int]:
        """Operation: remove those tombstones (checked again: a newer write may have come since)."""
        def op(txn: Any, fx: Effects) -> int:
            n = 0
            for key in keys:
                raw = txn.get(key, db=self._data)
                if raw is None:
                    continue
                rec = pb.Record.FromString(raw)
                if not (rec.tombstone and rec.version.wall_ms < before_ms
                        and rec.seq <= upto.get(rec.origin, 0)):
                    continue
                txn.delete(key, db=self._data)
                b = bucket_of(key)
                fx.bucket_xor[b] = fx.bucket_xor.get(b, 0) ^ row_hash(key, rec)
                fx.tombstones_delta -= 1
                fx.tombstone_changes.append((key, False))
                n += 1
            return n
        return op

    def adopt_snapshot(self, watermarks: dict[str, int]) -> Callable[[Any, Effects], dict[str, int]]:
        """Operation, after a snapshot refill: our data now reflects every write up to *watermarks*;
        move our watermarks there and mark the log before them as compacted (we never held it)."""
        def op(txn: Any, fx: Effects) -> dict[str, int]:
            moved = {}
            for origin, wm in watermarks.items():
                if wm > self._wm(txn, origin):
                    txn.put(b"wm:" + origin.encode(), _U64.pack(wm), db=self._meta)
                    txn.put(b"trim:" + origin.encode(), _U64.pack(wm), db=self._meta)
                    fx.watermarks[origin] = wm
                    fx.trimmed[origin] = wm
                    moved[origin] = wm
            return moved
        return op

    def _trim(self, txn: Any, origin: str) -> int:
        raw = txn.get(b"trim:" + origin.encode(), db=self._meta)
        return _U64.unpack(raw)[0] if raw else 0

    def disk_bytes(self) -> dict[str, int]:
        """The data file's size and the pages LMDB actually uses (its high-water mark) in bytes."""
        env = self._env()
        info, stat = env.info(), env.stat()
        return {"file_bytes": (self.path / "data.mdb").stat().st_size,
                "used_bytes": (info["last_pgno"] + 1) * stat["psize"]}

    def save_cursor(self, peer: str, acked: dict[str, int]) -> Callable[[Any, Effects], None]:
        """Operation: persist a peer's durably acknowledged positions."""
        def op(txn: Any, fx: Effects) -> None:
            for origin, seq in acked.items():
                txn.put(f"cursor:{peer}\0{origin}".encode(), _U64.pack(seq), db=self._meta)
        return op

    def _wm(self, txn: Any, origin: str) -> int:
        raw = txn.get(b"wm:" + origin.encode(), db=self._meta)
        return _U64.unpack(raw)[0] if raw else 0

    def _append(self, txn: Any, fx: Effects, e: pb.Entry) -> None:
        """Log entry, data row (last-writer-wins by version) and the origin's watermark, one txn."""
        txn.put(log_key(e.origin, e.seq), e.SerializeToString(), db=self._log)
        wm = max(self._wm(txn, e.origin), e.seq)
        txn.put(b"wm:" + e.origin.encode(), _U64.pack(wm), db=self._meta)
        fx.watermarks[e.origin] = wm
        self._apply_row(txn, fx, e)

    def _apply_row(self, txn: Any, fx: Effects, e: pb.Entry) -> bool:
        raw = txn.get(e.key, db=self._data)
        old = pb.Record.FromString(raw) if raw is not None else None
        if old is not None and not newer(e.version, old.version):
            return False
        rec = pb.Record(value=e.value, tombstone=e.tombstone, version=e.version, origin=e.origin, seq=e.seq)
        txn.put(e.key, rec.SerializeToString(), db=self._data)
        b = bucket_of(e.key)
        delta = row_hash(e.key, rec)
        if old is not None:
            delta ^= row_hash(e.key, old)
            fx.keys_delta -= 0 if old.tombstone else 1
            fx.tombstones_delta -= 1 if old.tombstone else 0
        fx.keys_delta += 0 if rec.tombstone else 1
        fx.tombstones_delta += 1 if rec.tombstone else 0
        if rec.tombstone or (old is not None and old.tombstone):
            fx.tombstone_changes.append((bytes(e.key), rec.tombstone))
        fx.bucket_xor[b] = fx.bucket_xor.get(b, 0) ^ delta
        fx.max_version = max(fx.max_version, Stamp.from_pb(e.version))
        return True

    def _writer_loop(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            batch = [item] if item[1].set_running_or_notify_cancel() else []
            while self.group_commit and len(batch) < 1024:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                # A waiter that gave up (its RPC was cancelled) before we began is dropped; once running,
                # its future can no longer be cancelled, so resolving it below cannot fail.
                if nxt[1].set_running_or_notify_cancel():
                    batch.append(nxt)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[Op, concurrent.futures.Future[Any]]]) -> None:
        env = self.env
        if env is None:
            for _, fut in batch:
                fut.set_exception(StoreClosed("store closed"))
            return
        outcomes: list[tuple[concurrent.futures.Future[Any], Any, Effects | None, BaseException | None]] = []
        try:
            with env.begin(write=True) as txn:
                for op, fut in batch:
                    fx = Effects()
                    try:
                        outcomes.append((fut, op(txn, fx), fx, None))
                    except lmdb.MapFullError:
                        raise
                    except Exception as exc:  # an operation's own error fails only that operation
                        outcomes.append((fut, None, None, exc))
        except lmdb.MapFullError:
            if len(batch) > 1:  # retry one by one so only the writes that do not fit fail
                for item in batch:
                    self._commit([item])
            else:
                batch[0][1].set_exception(StoreFull(
                    f"storage map is full (map size {self.map_size} bytes); raise --map-size"))
            return
        except Exception as exc:
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self.commits += 1
        self.committed_ops += len(batch)
        moved: dict[str, int] = {}
        for fut, result, fx, exc in outcomes:
            if fx is not None:
                for b, x in fx.bucket_xor.items():
                    self.buckets[b] ^= x
                self.keys += fx.keys_delta
                self.tombstones += fx.tombstones_delta
                self.max_version = max(self.max_version, fx.max_version)
                for origin, wm in fx.watermarks.items():
                    if wm > self.watermarks.get(origin, 0):
                        self.watermarks[origin] = wm
                        moved[origin] = wm
                for origin, t in fx.trimmed.items():
                    self.trimmed[origin] = max(self.trimmed.get(origin, 0), t)
                for key, tomb in fx.tombstone_changes:
                    if tomb:
                        self.tombstone_keys.add(key)
                    else:
                        self.tombstone_keys.discard(key)
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        if moved and self.on_commit is not None:
            self.on_commit(moved)
