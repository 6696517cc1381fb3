"""The LMDB store on its own: group commit, one transaction per write and its watermarks, recovery,
cancelled waiters, map full. (In-process: no server involved.)"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kvstore.proto import kvstore_pb2 as pb
from kvstore.storage import Store, StoreFull


def version(ms: int, node: str = "n1") -> pb.Version:
    return pb.Version(wall_ms=ms, logical=0, node=node)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A private temporary directory (not pytest's shared base, which parallel sessions prune)."""
    with tempfile.TemporaryDirectory(prefix="kvstore-store-") as d:
        yield Path(d)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "data", map_size=8 << 20)
    s.open()
    s.recover()
    s.start_writer()
    yield s
    s.close()


def blocker(started: threading.Event, release: threading.Event):
    def op(txn, fx):
        started.set()
        assert release.wait(10)
    return op


def test_writes_queued_while_the_writer_is_busy_commit_together(store: Store) -> None:
    started, release = threading.Event(), threading.Event()
    first = store.submit(blocker(started, release))
    assert started.wait(10)
    futs = [store.submit(store.local_write("n1", f"k{i}".encode(), b"v", False, version(i + 1)))
            for i in range(50)]
    release.set()
    entries = [f.result(10) for f in futs]
    first.result(10)
    assert [e.seq for e in entries] == list(range(1, 51))
    assert store.commits == 2 and store.committed_ops == 51  # one transaction for the 50 queued writes
    assert store.watermarks == {"n1": 50}


def test_without_group_commit_every_write_is_its_own_transaction(tmp_path: Path) -> None:
    s = Store(tmp_path / "d", map_size=8 << 20, group_commit=False)
    s.open()
    s.recover()
    s.start_writer()
    try:
        futs = [s.submit(s.local_write("n1", f"k{i}".encode(), b"v", False, version(i + 1)))
                for i in range(20)]
        for f in futs:
            f.result(10)
        assert s.commits == 20
    finally:
        s.close()


def test_a_waiter_cancelled_before_its_turn_does_not_stop_the_writer(store: Store) -> None:
    started, release = threading.Event(), threading.Event()
    store.submit(blocker(started, release))
    assert started.wait(10)
    gone = store.submit(store.local_write("n1", b"gone", b"v", False, version(1)))
    assert gone.cancel()  # its RPC was cancelled while queued
    release.set()
    after = store.submit(store.local_write("n1", b"after", b"v", False, version(2)))
    assert after.result(10).seq == 1
    assert store.get(b"gone") is None and store.get(b"after").value == b"v"


def test_recovery_rebuilds_the_same_state_from_disk(tmp_path: Path) -> None:
    s = Store(tmp_path / "d", map_size=8 << 20)
    s.open()
    s.recover()
    s.start_writer()
    s.submit(s.local_write("n1", b"a", b"1", False, version(5))).result(10)
    s.submit(s.local_write("n1", b"a", b"old", False, version(3))).result(10)  # older version: loses
    replicated = [pb.Entry(origin="n2", seq=1, key=b"b", value=b"2", version=version(4, "n2")),
                  pb.Entry(origin="n2", seq=3, key=b"c", value=b"gap", version=version(6, "n2"))]
    s.submit(s.apply_entries(replicated)).result(10)
    s.submit(s.local_write("n1", b"b", b"", True, version(7))).result(10)
    s.submit(s.save_cursor("n2", {"n1": 2})).result(10)
    before = (s.digest(), dict(s.watermarks), s.keys, s.tombstones)
    assert before[1:] == ({"n1": 3, "n2": 1}, 1, 1)  # n2's seq 3 would leave a gap: not applied
    assert s.get(b"a").value == b"1" and s.get(b"c") is None
    s.close()
    again = Store(tmp_path / "d", map_size=8 << 20)
    again.open()
    again.recover()
    try:
        assert (again.digest(), again.watermarks, again.keys, again.tombstones) == before
        assert again.cursors == {"n2": {"n1": 2}}
        assert again.incarnation == 2
        assert [e.seq for e in again.read_log({"n1": 1})] == [2, 3, 1]
    finally:
        again.close()


def test_map_full_fails_only_the_writes_that_do_not_fit(tmp_path: Path) -> None:
    s = Store(tmp_path / "d", map_size=256 << 10)
    s.open()
    s.recover()
    s.start_writer()
    try:
        futs = [s.submit(s.local_write("n1", f"k{i}".encode(), b"x" * 20000, False, version(i + 1)))
                for i in range(20)]
        outcomes = []
        for f in futs:
            try:
                f.result(10)
                outcomes.append("ok")
            except StoreFull:
                outcomes.append("full")
        assert "ok" in outcomes and "full" in outcomes
        assert s.watermarks["n1"] == outcomes.count("ok")
    finally:
        s.close()
