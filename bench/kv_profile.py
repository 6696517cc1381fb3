"""Where a kvstore put's time goes: the nodes' own split of each write (waiting for the local commit vs.
for the quorum), and a cProfile of the receiving node's event-loop thread (KVSTORE_PROFILE)."""

from __future__ import annotations

import asyncio
import io
import os
import pstats
import tempfile
from pathlib import Path

from kvstore.client import AsyncKVClient
from workbook.kvcluster import KVCluster
from workbook.run import Run

PUTS = 3000
WORKERS = 16
VALUE = b"x" * 100


async def profile_puts(puts: int = PUTS, top: int = 14) -> dict:
    """Put through kv1 of a 3-node W=2 cluster with every node profiled; print the split and the top
    functions by own time on kv1 and on kv2 (a replica)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KVSTORE_PROFILE"] = str(Path(tmp) / "prof")
        try:
            with Run.create("bench-kv-profile") as run:
                cluster = await KVCluster.start(run, 3)
                os.environ.pop("KVSTORE_PROFILE")
                c = AsyncKVClient(cluster.address("kv1"), timeout=10.0)
                try:
                    async def worker(w: int) -> None:
                        for i in range(w, puts, WORKERS):
                            await c.put(f"p{i}", VALUE)
                    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
                    st = await c.status()
                finally:
                    await c.close()
                    await cluster.aclose()
                for name in cluster.names:
                    cluster.stop(name)  # SIGTERM: the profile is written at a clean exit
        finally:
            os.environ.pop("KVSTORE_PROFILE", None)
        n = st["writes_timed"] or 1
        commit_ms, quorum_ms = 1000 * st["write_commit_s"] / n, 1000 * st["write_quorum_s"] / n
        print(f"kvstore put profile: {puts} puts of {len(VALUE)} bytes through kv1, {WORKERS} concurrent; "
              f"per put on kv1: {commit_ms:.2f} ms waiting for the local commit, {quorum_ms:.2f} ms for "
              f"the quorum; {st['committed_ops'] / max(1, st['commits']):.1f} ops per LMDB commit")
        for name in ("kv1", "kv2"):
            path = Path(tmp) / f"prof.{name}"
            if not path.exists():
                print(f"  (no profile from {name})")
                continue
            out = io.StringIO()
            stats = pstats.Stats(str(path), stream=out)
            total = stats.total_tt  # type: ignore[attr-defined]
            stats.sort_stats("tottime").print_stats(top)
            lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
            start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
            print(f"  {name} event-loop thread, {total:.2f} s of CPU in profiled code; top by own time:")
            for ln in lines[start:start + top + 1]:
                print("    " + ln[:150])
    return {"commit_ms": commit_ms, "quorum_ms": quorum_ms}
