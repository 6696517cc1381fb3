"""The library steps the kv notebooks share, on a real cluster: what they record, not the incidents
(each incident's regression test is its notebook)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from workbook import History, Nemesis, plots
from workbook.workloads import crash_cycle


async def test_a_crash_cycle_records_the_kill_and_the_restart_as_one_nemesis_fault(start_cluster) -> None:
    cluster = await start_cluster()
    history = History()
    result = await crash_cycle(cluster, node="kv1", acks_before_kill=20, writers=2, prefix="c1",
                               history=history, nemesis=Nemesis(history, kv=cluster), converge_timeout=20)
    [fault] = history.faults()
    assert (fault["kind"], fault["node"]) == ("kill", "kv1")
    assert fault["start"] == result["kill_t"] and fault["end"] > fault["start"]
    acked = [r for r in history.operations(f="write") if r["type"] == "ok"]
    assert len(acked) >= 20 and all(r["key"].startswith("c1-") for r in acked)
    assert result["check"]["valid"] and result["check"]["acknowledged"] == len(acked)
    assert min(r["complete_time"] for r in acked) < fault["start"]
    # the timeline draws the fault as a band across the lanes, from the kill to the restart
    fig = plots.timeline(history)
    bands = [p for p in fig.axes[0].patches if p.get_alpha() == 0.3]
    assert len(bands) == 1
    start, end = bands[0].get_x(), bands[0].get_x() + bands[0].get_width()
    assert abs(start - fault["start"]) < 1e-9 and abs(end - fault["end"]) < 1e-9
