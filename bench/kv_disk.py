"""kvstore disk use under a steady workload: PUTS puts over KEYS keys into a 3-node cluster, with
compaction and without it (an interval longer than the run), sampling every node's LMDB data file.
Prints the series and the growth after the first quarter, and plots it to outputs/bench/."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from kvstore.client import AsyncKVClient
from workbook.kvcluster import KVCluster
from workbook.run import Run

PUTS = 100_000
KEYS = 1_000
SAMPLES = 20
WORKERS = 32
VALUE = b"v" * 100
PLOT = Path(__file__).resolve().parents[1] / "outputs" / "bench" / "kvstore-disk.png"


async def steady_load(extra_args: list[str], label: str, puts: int = PUTS) -> dict:
    """Run the workload on a fresh cluster; returns the samples (puts done, MiB used per node)."""
    with Run.create(f"bench-kv-disk-{label}") as run:
        cluster = await KVCluster.start(run, 3, extra_args=extra_args)
        clients = [AsyncKVClient(cluster.address(n), timeout=10.0) for n in cluster.names]
        samples: list[dict] = []
        done = 0
        errors = 0
        t0 = time.monotonic()

        def sample() -> None:
            rows = cluster.status(timeout=5.0)
            samples.append({"puts": done, "seconds": round(time.monotonic() - t0, 1),
                            "used_mib": [round(r.get("disk_used_bytes", 0) / 2**20, 2) for r in rows],
                            "file_mib": [round(r.get("disk_file_bytes", 0) / 2**20, 2) for r in rows],
                            "log_entries": [sum(r["watermarks"].values()) - sum(r.get("trimmed", {}).values())
                                            for r in rows]})

        async def worker(w: int) -> None:
            nonlocal done, errors
            c = clients[w % len(clients)]
            i = w
            while i < puts:
                try:
                    await c.put(f"key{i % KEYS}", VALUE)
                except Exception:
                    errors += 1
                    await asyncio.sleep(0.01)
                    continue
                done += 1
                i += WORKERS

        async def sampler() -> None:
            step = puts // SAMPLES
            mark = 0
            while done < puts - WORKERS:
                if done >= mark:
                    await asyncio.to_thread(sample)
                    mark += step
                await asyncio.sleep(0.05)

        try:
            await asyncio.gather(sampler(), *(worker(w) for w in range(WORKERS)))
            await cluster.wait_converged(30)
            await asyncio.sleep(2.5)  # two compaction rounds after the last put
            await asyncio.to_thread(sample)
        finally:
            for c in clients:
                await c.close()
            await cluster.aclose()
    return {"label": label, "samples": samples, "errors": errors, "seconds": time.monotonic() - t0}


def growth(result: dict) -> tuple[float, float, float]:
    """(MiB at a quarter of the puts, MiB at the end, MiB per 10,000 puts after that quarter) for the
    largest node."""
    s = result["samples"]
    q = next(x for x in s if x["puts"] >= PUTS // 4)
    end = s[-1]
    a, b = max(q["used_mib"]), max(end["used_mib"])
    return a, b, (b - a) / max(1, end["puts"] - q["puts"]) * 10_000


def plot(results: list[dict]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs = [x["puts"] for x in r["samples"]]
        ax.plot(xs, [max(x["used_mib"]) for x in r["samples"]], marker="o", label=r["label"])
    ax.set_xlabel(f"puts (over {KEYS} keys, {len(VALUE)}-byte values)")
    ax.set_ylabel("LMDB pages in use, largest node (MiB)")
    ax.set_title("kvstore disk use under a steady workload")
    ax.legend()
    ax.grid(alpha=0.3)
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return PLOT


async def disk_under_steady_load() -> dict:
    print(f"kvstore disk use: {PUTS} puts over {KEYS} keys, 3 nodes, with and without compaction")
    results = [await steady_load(["--compact-interval", "1"], "compaction every 1 s"),
               await steady_load(["--compact-interval", "100000"], "no compaction")]
    for r in results:
        a, b, per = growth(r)
        print(f"  {r['label']:22s} {a:6.2f} MiB at {PUTS // 4} puts -> {b:6.2f} MiB at the end "
              f"({per:+.3f} MiB per 10,000 puts after that; {r['seconds']:.0f} s, {r['errors']} errors)")
        print("    puts:        " + " ".join(f"{x['puts']:>6}" for x in r["samples"]))
        print("    MiB (max):   " + " ".join(f"{max(x['used_mib']):6.2f}" for x in r["samples"]))
        print("    log entries: " + " ".join(f"{max(x['log_entries']):>6}" for x in r["samples"]))
    path = plot(results)
    if path:
        print(f"  plot: {path}")
    return {"puts": sum(r["samples"][-1]["puts"] for r in results), "results": results}
