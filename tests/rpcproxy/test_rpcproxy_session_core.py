"""rpc-10, at scale: the session core (``rpcproxy.wscore``) under a hypothesis state machine, in-process, on
simulated upstreams (``simulated_session``): 10,000+ derandomized interleavings of subscribe and unsubscribe,
requests with reused ids, batches, upstream death, unhealth and failback, slow re-subscribes, queue overflow
and client disconnect mid-move, each judged on every frame the client receives and once the world settles.

The default core must hold every property; each defect switch that acts within a session must be found,
and shrunk to a short sequence. ``RPCPROXY_CORE_EXAMPLES`` raises the example count (a nightly run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from rpcproxy.metrics import ProxyMetrics
from simulated_session import NODES, Violation, World

EXAMPLES = int(os.environ.get("RPCPROXY_CORE_EXAMPLES", "10000"))
STEPS = 12

IDS = (1, 2, "a", None, 7)  # request ids, reused on purpose
CALLS = (
    ("eth_blockNumber", []),
    ("eth_getBlockByNumber", ["latest", False]),
    ("eth_sendRawTransaction", ["0x00"]),  # a write: not re-sent after a lost upstream
    ("admin_peers", []),  # refused by the proxy
)


def _request(world: World, n: int) -> None:
    method, params = CALLS[n % len(CALLS)]
    world.send({"jsonrpc": "2.0", "id": IDS[n // len(CALLS) % len(IDS)], "method": method, "params": params})


def _batch(world: World, n: int) -> None:
    frame: list[dict[str, Any]] = []
    for i in range(1 + n % 3):
        method, params = CALLS[(n + i) % len(CALLS)]
        frame.append(
            {"jsonrpc": "2.0", "id": IDS[(n + 2 * i) % len(IDS)], "method": method, "params": params}
        )
    if n % 2:  # a notification inside a batch gets no answer
        frame.append({"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []})
    world.send(frame)


def _burst(world: World, n: int) -> None:
    for _ in range(2 + n % 5):  # enough to overflow the move queue (4 frames)
        world.send({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})


def _unsubscribe(world: World, n: int) -> None:
    held = sorted(world.held)
    world.unsubscribe(held[n % len(held)] if held and n < 24 else "0xnot-a-subscription")


def _step(world: World, n: int) -> None:
    if world.events:
        world.fire(n)


def _run(world: World, n: int) -> None:
    """Time passes: up to n + 1 things happen, and the chain grows by a block."""
    world.run(1 + n)
    world.new_block()


def _node(n: int) -> str:
    return NODES[n % len(NODES)]


def _behave(world: World, n: int) -> None:
    node = world.nodes[_node(n)]
    node.slow, node.eager_head, node.refusing = bool(n & 4), bool(n & 8), bool(n & 16)


# One rule draws a named operation and a number (its argument, which also picks the node): cheaper to
# generate than a rule per operation with preconditions, and the names keep a shrunk failure readable.
# The chain moving and messages flowing are listed more than once (drawn more often).
OPS: dict[str, Callable[[World, int], None]] = {
    "run": _run,
    "step": _step,
    "tick": lambda w, n: w.tick(),
    "request": _request,
    "batch": _batch,
    "burst": _burst,
    "subscribe newHeads": lambda w, n: w.subscribe("newHeads"),
    "subscribe logs": lambda w, n: w.subscribe("logs"),
    "unsubscribe": _unsubscribe,
    "new block": lambda w, n: w.new_block(),
    "disconnect": lambda w, n: w.disconnect(),
    "kill": lambda w, n: w.kill(_node(n)),
    "revive": lambda w, n: w.revive(_node(n)),
    "unhealthy": lambda w, n: w.set_health(_node(n), False),
    "healthy": lambda w, n: w.set_health(_node(n), True),
    "behave": _behave,
}
DRAWN = [*OPS, "run", "run", "new block", "new block", "subscribe newHeads", "kill", "request"]


class Runs:
    """What the runs of one search saw: the example count, the steps of the last (shrunk) failure, and the
    metrics of every session (one registry for the search: a registry per example costs more)."""

    def __init__(self) -> None:
        self.examples = 0
        self.steps: list[str] = []
        self.metrics = ProxyMetrics(list(NODES))

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def ops(self) -> list[str]:
        """The operations of the last run (without the set-up and the final settling)."""
        return [s for s in self.steps if not s.startswith("subscribed to") and s != "settle"]


def machine(defects: frozenset[str], runs: Runs, gate_routing: bool = False) -> type[RuleBasedStateMachine]:
    class SessionCoreMachine(RuleBasedStateMachine):
        """A client, three upstream nodes and a scheduler, around one session core."""

        def __init__(self) -> None:
            super().__init__()
            runs.examples += 1
            self.steps: list[str] = []
            runs.steps = self.steps
            self.world = World(runs.metrics, defects, gate_routing=gate_routing)
            self.world.run_until_quiet()  # the first move: attached to the first node
            assert self.world.ready is True

        @initialize(subs=st.sampled_from([(), ("newHeads",), ("newHeads", "logs")]))
        def subscribed(self, subs: tuple[str, ...]) -> None:
            """Most sessions start with subscriptions: the moves worth searching re-subscribe."""
            self.steps.append(f"subscribed to {', '.join(subs) or 'nothing'}")
            for kind in subs:
                self.world.subscribe(kind)
            self.world.run_until_quiet()

        @rule(op=st.sampled_from(DRAWN), n=st.integers(0, 31))
        def act(self, op: str, n: int) -> None:
            self.steps.append(f"{op} {n}")
            OPS[op](self.world, n)

        def teardown(self) -> None:
            self.steps.append("settle")
            self.world.settle()

    return SessionCoreMachine


def search(defects: frozenset[str], examples: int, runs: Runs, *, gate_routing: bool = False) -> None:
    run_state_machine_as_test(
        machine(defects, runs, gate_routing),
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
            print_blob=False,
            report_multiple_bugs=False,
        ),
    )


def test_the_core_holds_every_property_over_many_interleavings() -> None:
    runs = Runs()
    started, cpu = time.monotonic(), time.process_time()
    search(frozenset(), EXAMPLES, runs)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    print(f"session core: {runs.examples} examples in {seconds:.1f} s ({cpu:.1f} s of CPU)")
    assert runs.examples >= EXAMPLES
    # The search reached the branches worth searching (a generator that never moves would prove nothing).
    reached = {
        "failover on death": runs.count("rpcproxy_ws_moves_total", reason="upstream_closed", outcome="ok"),
        "failover on unhealth": runs.count("rpcproxy_ws_moves_total", reason="unhealthy", outcome="ok"),
        "failback": runs.count("rpcproxy_ws_moves_total", reason="failback", outcome="ok"),
        "failed move attempt": runs.count(
            "rpcproxy_ws_moves_total", reason="upstream_closed", outcome="failed"
        ),
        "re-subscribe timeout": runs.count("rpcproxy_ws_replayed_subscriptions_total", outcome="timeout"),
        "re-subscribe refused": runs.count("rpcproxy_ws_replayed_subscriptions_total", outcome="error"),
        "queue overflow": runs.count("rpcproxy_ws_queue_overflow_total"),
        "read re-sent": runs.count("rpcproxy_ws_inflight_resent_total"),
        "write failed": runs.count("rpcproxy_ws_inflight_failed_total"),
        "gap filled": runs.count("rpcproxy_ws_gap_blocks_filled_total"),
        "head de-duplicated": runs.count("rpcproxy_ws_heads_deduplicated_total"),
    }
    print(reached)
    assert all(reached.values()), reached


def test_the_core_holds_them_when_routing_waits_for_a_serialized_monitor() -> None:
    """Under ``health-without-timeout`` a move asks before reading the nodes (``WaitRouting``)."""
    runs = Runs()
    search(frozenset(), EXAMPLES // 10, runs, gate_routing=True)
    assert runs.count("rpcproxy_ws_moves_total", reason="upstream_closed", outcome="ok")


@pytest.mark.parametrize(
    ("defect", "prop"),
    [
        ("replay-leak", "response"),
        ("unmapped-subscriptions", "notification"),
        ("drop-during-reconnect", "exactly-once"),
        ("no-failback", "failback"),
    ],
)
def test_the_search_finds_and_shrinks_each_session_defect(defect: str, prop: str) -> None:
    runs = Runs()
    with pytest.raises(Violation) as found:
        search(frozenset({defect}), EXAMPLES, runs)
    print(f"{defect}: found within {runs.examples} runs, shrunk to {runs.ops()}: {found.value}")
    assert found.value.prop == prop, str(found.value)
    assert len(runs.ops()) <= 6, runs.steps
