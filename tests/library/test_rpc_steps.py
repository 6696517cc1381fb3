"""The rpc notebooks' shared steps that are pure: binning a history, deriving health checks from sampled
counters, collecting notifications, and the pictures drawn from them. No processes."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import pytest
from workbook import History, Nemesis, checkers, plots, workloads
from workbook.ethstack import ProxyWatch
from workbook.history import Op
from workbook.rpcclient import Frame

matplotlib.use("Agg")


def history_of(*ops: tuple[str, float, float | None, str]) -> History:
    """(process, invoke time, complete time or None, type) per operation, times as given."""
    events: list[Op] = []
    for n, (process, start, end, type_) in enumerate(ops):
        events.append(Op(len(events), n, "invoke", process, "eth_blockNumber", "", n, None, start, start))
        if end is not None:
            events.append(Op(len(events), n, type_, process, "eth_blockNumber", "", n, None, end, end))
    return History(events, t0=0.0, wall0=0.0)


def test_share_over_time_bins_by_send_time_and_group() -> None:
    h = history_of(("a", 0.1, 0.2, "ok"), ("a", 0.5, 1.5, "info"), ("b", 1.2, 1.3, "fail"),
                   ("b", 1.4, None, ""))
    rows = workloads.share_over_time(h, bin_seconds=1.0, group=lambda r: r["process"])
    by = {(r["group"], r["t"]): r for r in rows}
    assert by[("a", 0.5)]["sent"] == 2 and by[("a", 0.5)]["unanswered share"] == 0.5
    assert by[("b", 1.5)] == {"t": 1.5, "group": "b", "sent": 2, "answered": 1, "unanswered": 1,
                              "unanswered share": 0.5}


def test_latency_over_time_gives_quantiles_of_ok_requests_per_bin() -> None:
    h = history_of(*[("a", 0.0, 0.01 * (i + 1), "ok") for i in range(10)], ("a", 0.5, 3.0, "info"))
    rows = workloads.latency_over_time(h, bin_seconds=1.0, group=lambda r: "x", quantiles=(0.5, 1.0))
    assert [(r["series"], round(r["latency"], 3), r["count"]) for r in rows] == [("x p50", 0.05, 10),
                                                                                 ("x p100", 0.1, 10)]


def test_latency_leaves_out_the_excluded_window() -> None:
    h = history_of(("a", 0.0, 0.1, "ok"), ("a", 1.0, 3.0, "ok"), ("a", 2.0, 2.1, "ok"))
    whole = checkers.latency(h, split=1.5)
    cut = checkers.latency(h, split=1.5, exclude=(0.5, 1.5))
    assert whole["count_before"] == 2 and cut["count_before"] == 1 and cut["count_after"] == 1
    assert cut["p50_ratio"] == pytest.approx(1.0)


def watch_with(rows: list[dict]) -> ProxyWatch:
    watch = ProxyWatch(SimpleNamespace(), None, 0.05)
    watch.rows = rows
    return watch


def sample(t: float, upstream: str, ok: int, error: int, seconds: float, rounds: int) -> dict:
    return {"t": t, "upstream": upstream, "checks_ok": ok, "checks_error": error, "check_seconds": seconds,
            "rounds": rounds}


def test_health_checks_are_derived_from_counter_growth_and_duration_sums() -> None:
    watch = watch_with([sample(0.0, "el1", 1, 0, 0.01, 1), sample(0.1, "el1", 2, 0, 0.03, 2),
                        sample(0.2, "el1", 2, 1, 0.53, 3), sample(0.3, "el1", 2, 1, 0.53, 3)])
    checks = watch.health_checks()
    assert [(c["outcome"], round(c["start"], 3), c["end"]) for c in checks] == [("ok", 0.08, 0.1),
                                                                              ("error", -0.3, 0.2)]
    assert watch.open_checks(stale=0.5) == []
    stuck = watch_with([sample(t / 10, "el1", 3, 0, 0.03, 3) for t in range(8)])
    opened = stuck.open_checks(stale=0.5)
    assert [(c["upstream"], c["start"], c["end"]) for c in opened] == [("el1", 0.0, 0.7)]


def frame(kind: str, sub: str, wall: float) -> Frame:
    message = {"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": sub, "result": {}}}
    return Frame(0, wall, wall, "c", "received", kind, message)


def test_notification_rows_label_known_ids_and_mark_unknown_ones() -> None:
    client = SimpleNamespace(name="geth", trace=[frame("notification-known-sub", "0xa", 1.0),
                                                 frame("notification-unknown-sub", "0xb", 2.0),
                                                 Frame(1, 3.0, 3.0, "c", "sent", "request", {"id": 1})])
    rows = workloads.notification_rows([client], History(t0=0.0, wall0=0.5), {("geth", "0xa"): "newHeads"})
    assert [(r["t"], r["subscription"], r["known"]) for r in rows] == [(0.5, "newHeads", True),
                                                                       (1.5, "unknown id", False)]


def test_subscription_labels() -> None:
    assert workloads.subscription_label(["logs", {}]) == "logs (all)"
    assert workloads.subscription_label(["logs", {"topics": [workloads.TRANSFER_TOPIC]}]) == "logs topics: 1"
    assert [workloads.subscription_label(s) for s in workloads.FIVE_SUBSCRIPTIONS][-1] == "syncing"


def test_the_rpc_pictures_draw_from_plain_rows() -> None:
    marks, spans = [("kill", 1.0)], [("window", 1.0, 2.0), ("window", 3.0, 4.0)]
    figures = [
        plots.counts_over_time([{"t": 0.5, "client": "a", "subscription": "newHeads"},
                                {"t": 1.5, "client": "a", "subscription": "unknown id"}],
                               panel="client", line="subscription", marks=marks),
        plots.lines_over_time([{"t": 0.0, "n": 1, "g": "el1"}, {"t": 1.0, "n": 0, "g": "el1"}], y="n",
                              group="g", marks=marks, spans=spans, ylim=(0, 2)),
        plots.outcomes_by_send_time([{"t": 0.1, "outcome": "result"}, {"t": 1.1, "outcome": "no answer"}],
                                    spans=spans),
        plots.checks_and_latency([{"upstream": "el1", "start": 0.0, "end": 0.1, "outcome": "ok"}],
                                 [{"t": 0.0, "latency": 0.01, "answered": True},
                                  {"t": 1.0, "latency": 2.0, "answered": False}], spans=spans),
    ]
    assert all(len(f.axes) >= 1 for f in figures)
    legend = figures[1].axes[0].get_legend().get_texts()
    assert [t.get_text() for t in legend].count("window") == 1  # one legend entry per span label


async def test_a_knob_set_again_replaces_the_fault_of_that_kind() -> None:
    class Admin:
        async def set(self, **knobs: object) -> None:
            pass

    h = History()
    nemesis = Nemesis(h, eth=SimpleNamespace(admin=lambda name: Admin()))
    await nemesis.fail("el1", ["eth_blockNumber"])
    await nemesis.fail("el1", ["eth_blockNumber"], fraction=0.25)
    faults = h.faults()
    assert [(f["kind"], f["end"] is not None) for f in faults] == [("fail", True), ("fail", False)]
    assert faults[0]["end"] >= faults[1]["start"]  # the first held until the second was in force
