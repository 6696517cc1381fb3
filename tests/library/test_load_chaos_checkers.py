"""The checkers and the replay hook added for rpc-08 … rpc-10, on hand-made data: no processes."""

from __future__ import annotations

import asyncio
import math

from workbook import History, Nemesis, Schedule, checkers
from workbook.nemesis import Fault
from workbook.rpcclient import Frame

SUB = "0x" + "a" * 32
HEAD = {"method": "eth_subscription", "params": {"subscription": SUB, "result": {}}}


def frame(seq: int, direction: str, message: object) -> Frame:
    return Frame(seq, float(seq), float(seq), "c", direction, "other", message)


def test_error_rate_counts_what_is_not_ok_and_leaves_out_the_excused() -> None:
    h = History()
    for i, type_ in enumerate(["ok", "ok", "fail", "info", "ok"]):
        h.complete(h.invoke("http", "eth_blockNumber", key=i), type_, -32000 if type_ == "fail" else None)
    h.invoke("http", "eth_blockNumber", key=9)  # still pending: an error too
    out = checkers.error_rate(h, max_rate=0.5)
    assert (out["operations"], out["errors"], out["valid"]) == (6, 3, False)
    excused = checkers.error_rate(h, max_rate=0.5, excuse=lambda r: r["result"] == -32000)
    assert (excused["errors"], excused["excused"], excused["valid"]) == (2, 1, True)
    assert excused["first_error"] is not None


def test_fault_at_blames_the_fault_in_force_else_the_last_one_ended() -> None:
    faults = [{"kind": "kill", "node": "el1", "start": 1.0, "end": 2.0},
              {"kind": "pause", "node": "el2", "start": 3.0, "end": 4.0}]
    assert checkers.fault_at(faults, 0.5) is None
    assert checkers.fault_at(faults, 1.5)["kind"] == "kill"
    assert checkers.fault_at(faults, 2.5)["kind"] == "kill"
    assert checkers.fault_at(faults, 3.5)["kind"] == "pause"


def test_flat_compares_the_last_quarter_with_the_first() -> None:
    assert checkers.flat([100, 100, 101, 102, 104, 105, 108, 109])["valid"]
    grows = checkers.flat([100, 100, 110, 120, 130, 140, 150, 160])
    assert not grows["valid"] and math.isclose(grows["change"], 0.55)
    assert not checkers.flat([1, 2])["valid"]
    assert checkers.percentiles([1, 2, 3, 4], (0.5, 0.99)) == {"p50": 2, "p99": 4}


def test_session_stream_finds_a_second_answer_and_an_unknown_subscription() -> None:
    good = [frame(0, "sent", {"id": 1, "method": "eth_subscribe", "params": ["newHeads"]}),
            frame(1, "received", {"id": 1, "result": SUB}),
            frame(2, "received", HEAD),
            frame(3, "sent", {"id": 1, "method": "eth_unsubscribe", "params": [SUB]}),
            frame(4, "received", {"id": 1, "result": True})]
    assert checkers.session_stream(good)["valid"]
    assert checkers.session_stream(good)["held"] == []
    leaked = [*good[:2], frame(5, "received", {"id": 1, "result": SUB})]
    out = checkers.session_stream(leaked)
    assert not out["valid"] and out["flagged"] == [5] and "response #2" in out["problems"][0]
    late = [*good, frame(6, "received", HEAD)]
    assert checkers.session_stream(late)["flagged"] == [6]
    unanswered = [frame(0, "sent", {"id": "x", "method": "eth_chainId", "params": []})]
    assert "without an answer" in checkers.session_stream(unanswered)["problems"][0]


class _Target:
    """Stands in for a stack: records the signals the nemesis sends."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self, name: str) -> None:
        self.calls.append(f"pause {name}")

    def resume(self, name: str) -> None:
        self.calls.append(f"resume {name}")


def test_replay_settles_after_each_undo_before_the_next_fault() -> None:
    target = _Target()
    nemesis = Nemesis(History(), eth=target)
    schedule = Schedule((Fault("pause", "el1", 0.0, 0.01), Fault("pause", "el2", 0.0, 0.01)))

    async def settle() -> None:
        target.calls.append("settled")

    applied = asyncio.run(nemesis.replay(schedule, settle=settle))
    assert target.calls == ["pause el1", "resume el1", "settled", "pause el2", "resume el2", "settled"]
    assert [(a["kind"], a["target"]) for a in applied] == [("pause", "el1"), ("pause", "el2")]
