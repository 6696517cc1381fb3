"""The history, the checkers and the schedules are pure: tested on hand-made histories, no processes."""

from __future__ import annotations

import pytest
from kvstore.client import KeyNotFound, OutcomeUnknown, Unavailable
from workbook import (
    Fault,
    History,
    NemesisError,
    RequestTimeout,
    RpcResponseError,
    Schedule,
    checkers,
    random_schedule,
)
from workbook.kvcluster import kv_outcome
from workbook.rpcclient import Frame, rpc_outcome


def op(h: History, process: str, f: str, key: str, value: object, type_: str, result: object = None,
       version: str = "") -> None:
    h.complete(h.invoke(process, f, key=key, value=value, node="kv1"), type_, result, version=version)


def test_operations_join_invokes_with_completions_and_keep_pending_ones() -> None:
    h = History()
    op(h, "w0", "write", "a", "a", "ok")
    h.invoke("w1", "write", key="b", value="b")
    rows = {r["key"]: r for r in h.operations()}
    assert rows["a"]["type"] == "ok" and rows["a"]["complete_time"] >= rows["a"]["invoke_time"]
    assert rows["b"]["type"] == "pending" and rows["b"]["complete_time"] is None
    assert h.counts() == {"ok": 1, "fail": 0, "info": 0, "pending": 1}
    with pytest.raises(ValueError, match="ok, fail or info"):
        h.complete(0, "done")


def test_a_saved_history_loads_back_the_same(tmp_path) -> None:
    h = History()
    op(h, "w0", "write", "a", "a", "ok", version="1.0.kv1")
    h.complete(h.invoke("nemesis", "kill", node="kv2", key="kill-1"), "ok")
    h.save(tmp_path / "h.jsonl")
    back = History.load(tmp_path / "h.jsonl")
    assert back.events == h.events and back.faults()[0]["kind"] == "kill"


def test_the_kv_client_decides_fail_or_info_from_typed_errors_not_text() -> None:
    refused = Unavailable("UNAVAILABLE", "any text at all", "t", applied=False)
    dropped = Unavailable("UNAVAILABLE", "nothing was written", "t")  # the transport's: no metadata
    assert kv_outcome("write")(refused) == ("fail", None)
    assert kv_outcome("write")(dropped) == ("info", None)
    assert kv_outcome("write")(OutcomeUnknown("DEADLINE_EXCEEDED", "", "t")) == ("info", None)
    assert kv_outcome("read")(KeyNotFound("NOT_FOUND", "", "t")) == ("ok", None)
    assert kv_outcome("read")(dropped) == ("fail", None)
    assert rpc_outcome(RpcResponseError(-32000, "x")) == ("fail", -32000)
    assert rpc_outcome(RequestTimeout("late")) == ("info", None)


def test_set_full_finds_lost_unexpected_and_recovered_writes() -> None:
    h = History()
    op(h, "w0", "write", "k-1", "k-1", "ok")
    op(h, "w0", "write", "k-2", "k-2", "ok")
    op(h, "w0", "write", "k-3", "k-3", "info")
    op(h, "w0", "write", "k-4", "k-4", "fail")
    result = checkers.set_full(h, {"k-1", "k-3", "k-4"})
    assert result["lost"] == ["k-2"] and result["recovered"] == ["k-3"] and result["unexpected"] == ["k-4"]
    assert not result["valid"]
    assert checkers.set_full(h, {"k-1", "k-2"})["valid"]
    assert checkers.set_full(h, {"k-1"}, prefix="j-")["attempted"] == 0


def test_register_reports_monotonic_read_and_read_your_writes_violations() -> None:
    h = History()
    op(h, "c", "write", "r", "v2", "ok", version="200.0.kv1")
    op(h, "c", "read", "r", None, "ok", "v2", version="200.0.kv1")
    op(h, "c", "read", "r", None, "ok", "v1", version="100.0.kv3")  # a lagging node: time went back
    result = checkers.register(h, "r")
    assert not result["valid"]
    assert len(result["monotonic_read_violations"]) == 1 and len(result["read_your_writes_violations"]) == 1
    good = History()
    op(good, "c", "read", "r", None, "ok", "v1", version="100.0.kv1")
    op(good, "c", "read", "r", None, "ok", "v2", version="200.0.kv2")
    assert checkers.register(good, "r")["valid"]


def test_register_by_key_judges_each_key_as_its_own_register() -> None:
    h = History()
    op(h, "c", "read", "a", None, "ok", "a2", version="200.0.kv1")
    op(h, "c", "read", "b", None, "ok", "b1", version="100.0.kv1")  # another key: not time going back
    assert not checkers.register(h)["valid"]  # one register across keys: looks like going back
    assert checkers.register(h, by_key=True)["valid"]
    op(h, "c", "read", "a", None, "ok", "a1", version="150.0.kv3")  # key a: older than read before
    (v,) = checkers.register(h, by_key=True)["monotonic_read_violations"]
    assert v["key"] == "a" and v["earlier_version"] == "200.0.kv1"


def test_last_write_lists_the_acknowledged_writes_that_vanished() -> None:
    h = History()
    for i in range(3):
        op(h, "writer", "write", "reg", f"v{i}", "ok")
    result = checkers.last_write(h, "reg", {"kv1": "v0", "kv2": "v2"})
    assert not result["valid"] and [v["value"] for v in result["vanished"]] == ["v1", "v2"]
    assert checkers.last_write(h, "reg", {"kv1": "v2"})["valid"]


def test_convergence_needs_every_node_and_one_digest() -> None:
    assert checkers.convergence([{"name": "a", "digest": "x"}, {"name": "b", "digest": "x"}])["valid"]
    assert not checkers.convergence([{"name": "a", "digest": "x"}, {"name": "b", "digest": "y"}])["valid"]
    assert not checkers.convergence([{"name": "a", "digest": "x"}, {"name": "b", "digest": None}])["valid"]


def test_exactly_one_response_counts_unanswered_and_unsolicited() -> None:
    h = History()
    op(h, "strict", "eth_blockNumber", 1, [], "ok", "0x1")
    assert checkers.exactly_one_response(h)["valid"]
    stray = Frame(0, 0.0, 0.0, "strict", "received", "unsolicited-response", {"id": 1, "result": "0x9"})
    assert checkers.exactly_one_response(h, [[stray]])["unsolicited"] == 1
    op(h, "strict", "eth_blockNumber", 2, [], "info")
    assert checkers.exactly_one_response(h)["unanswered"] == 1


def test_latency_quantiles_before_and_after_a_split() -> None:
    h = History(t0=0.0)
    for i in range(4):
        h.complete(h.invoke("c", "req", key=i), "ok")
    result = checkers.latency(h, split=h.events[3].time + 1e-9)
    assert result["count_before"] == 2 and result["count_after"] == 2 and result["valid"]


def test_a_schedule_is_a_pure_function_of_its_seed_and_round_trips_through_json(tmp_path) -> None:
    a = random_schedule(3, ["kill", "pause", "partition"], ["kv1", "kv2", "kv3"], count=9, hold=(0.1, 0.5),
                        quiet=(0.1, 0.2))
    b = random_schedule(3, ["kill", "pause", "partition"], ["kv1", "kv2", "kv3"], count=9, hold=(0.1, 0.5),
                        quiet=(0.1, 0.2))
    assert a == b and len(a) == 9 and {f.kind for f in a.faults} == {"kill", "pause", "partition"}
    assert [f.at for f in a.faults] == sorted(f.at for f in a.faults)
    a.save(tmp_path / "s.json")
    assert Schedule.load(tmp_path / "s.json") == a
    assert random_schedule(4, ["kill"], ["kv1", "kv2"], count=9, hold=(0.1, 0.5), quiet=(0.1, 0.2)) != a
    with pytest.raises(NemesisError, match="unknown fault kind"):
        Fault("explode", "kv1")
