"""A session core (``rpcproxy.wscore``) in-process: simulated upstream nodes, a client that judges every
frame it receives, and a scheduler of everything asynchronous (a link opening or dying, an upstream taking a
request or sending a frame, a health round, a timer). No sockets, no processes, no event loop: one example
of the property test costs well under a millisecond.

Properties, judged as the frames arrive (``Violation`` names the one that broke):
- ``response``: no request id is answered more often than it was sent;
- ``notification``: no notification arrives under a subscription id the client does not hold;
- ``duplicate-head``: no newHeads block reaches one subscription twice;
- ``queue-bound``: the move queue stays within its caps;
and once the world has healed and everything has settled (``settle``):
- ``exactly-once``: every request got exactly one response;
- ``gap``: every newHeads block missing from a subscription's delivered range was counted as unfilled;
- ``failback``: the session sits on the first node.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from rpcproxy.config import ProxyConfig, parse_upstream
from rpcproxy.jsonrpc import MethodPolicy
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.tables import IdAllocator
from rpcproxy.wsactions import (
    Action,
    CancelTimer,
    CloseLink,
    LinkRef,
    OpenLink,
    Ready,
    StartTimer,
    ToClient,
    ToLink,
    WaitRound,
    WaitRouting,
)
from rpcproxy.wscore import SessionCore

NODES = ("a", "b", "c")
SETTLE_LIMIT = 20_000  # scheduler steps before settling is declared a livelock


class Violation(AssertionError):
    """A property of the session broke; ``prop`` names it."""

    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(f"{prop}: {detail}")
        self.prop = prop


def sim_config() -> ProxyConfig:
    """Small caps and deadlines, so overflow, expiry and re-subscribe timeouts are a few steps away."""
    cfg = ProxyConfig(
        health_interval=1.0,
        failback_after=1.0,
        ws_resubscribe_timeout=5.0,
        ws_drain_timeout=5.0,
        ws_move_timeout=10.0,
        ws_queue_max_messages=4,
        ws_queue_max_bytes=600,
        ws_max_subscriptions=4,
        ws_max_inflight=16,
        gap_fill_max=3,
    )
    cfg.upstreams = [parse_upstream(f"{n}=http://{n}.invalid", "primary", i) for i, n in enumerate(NODES)]
    return cfg


CONFIG = sim_config()  # read-only: shared by every example
POLICY = MethodPolicy(CONFIG.deny_prefixes)


def block_hash(number: int) -> str:
    return f"0x{number:064x}"


@dataclass
class Node:
    """One simulated execution node (all nodes follow one chain)."""

    name: str
    alive: bool = True
    healthy: bool = True
    healthy_since: float = 0.0
    slow: bool = False  # holds eth_subscribe answers (a slow re-subscribe)
    eager_head: bool = False  # sends the current head right after a newHeads subscribe
    refusing: bool = False  # answers eth_subscribe with an error


@dataclass(eq=False)
class SimLink:
    """One open simulated upstream WebSocket: requests not yet taken, frames not yet sent, subscriptions."""

    ref: LinkRef
    node: Node
    inbox: deque[dict[str, Any]] = field(default_factory=deque)
    outbox: deque[str] = field(default_factory=deque)
    subs: dict[str, str] = field(default_factory=dict)  # upstream subscription id -> kind
    open: bool = True


class World:
    """The session core, its simulated upstreams and client, and the properties judged on the client side."""

    _sub_serial = 0  # upstream subscription ids are unique across nodes and examples

    def __init__(
        self, metrics: ProxyMetrics, defects: frozenset[str] = frozenset(), *, gate_routing: bool = False
    ) -> None:
        self.cfg = CONFIG
        self.metrics = metrics
        self.now = 0.0
        self.head = 1
        self.nodes = {n: Node(n) for n in NODES}
        self.links: dict[LinkRef, SimLink] = {}
        self.unwanted: set[LinkRef] = set()
        self.events: list[tuple[str, Any]] = []  # ready to happen, in the order they became ready
        self.timers: dict[Any, float] = {}
        self.core = SessionCore(
            self.cfg,
            metrics,
            POLICY,
            IdAllocator(),
            self,
            defects=defects,
            clock=lambda: self.now,
            event=self._event,
            gate_routing=gate_routing,
        )
        self.ready: bool | None = None
        self.disconnected = False
        # the client's view
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.held: set[str] = set()
        self.unsubscribing: dict[str, str] = {}  # unsubscribe request id -> subscription id
        self.heads: dict[str, set[int]] = {}
        self.head_subs: set[str] = set()
        self.subscribing: dict[str, str] = {}  # subscribe request id -> kind
        self._serial = 0
        self.unfilled = 0  # newHeads blocks the core logged as unfilled (ws.gap_unfilled)
        self.perform(self.core.start())

    # -- the health view the core reads (``wscore.Health``) --------------------------------------------

    def healthy(self, node: str) -> bool:
        return self.nodes[node].healthy

    def routable(self) -> list[str]:
        return [n for n in NODES if self.nodes[n].healthy]

    def pick(self, exclude: set[str]) -> str | None:
        return next((n for n in NODES if self.nodes[n].healthy and n not in exclude), None)

    def failback_target(self, current: str) -> str | None:
        for name in NODES:
            if name == current:
                return None
            node = self.nodes[name]
            if node.healthy and self.now - node.healthy_since >= self.cfg.failback_after:
                return name
        return None

    # -- carrying out the core's actions ---------------------------------------------------------------

    def perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ToClient):
                self._client_receives(action.text)
            elif isinstance(action, ToLink):
                link = self.links.get(action.link)
                if link is not None and link.open:
                    link.inbox.append(json.loads(action.text))
                    self.events.append(("take", link))
            elif isinstance(action, OpenLink):
                self.events.append(("open", action.link))
            elif isinstance(action, CloseLink):
                link = self.links.get(action.link)
                if link is None:
                    self.unwanted.add(action.link)
                elif link.open:
                    self._drop(link)
            elif isinstance(action, StartTimer):
                self.timers[action.key] = self.now + action.delay
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.key, None)
            elif isinstance(action, WaitRound):
                self.events.append(("round", action.within))
            elif isinstance(action, WaitRouting):  # a serialized monitor: routing waits for its round
                self.events.append(("routing", None))
            elif isinstance(action, Ready):
                self.ready = action.ok
        self._check_queue()

    def _drop(self, link: SimLink) -> None:
        """The connection ends: what was not sent is lost, and the reader reports the end."""
        link.open = False
        link.inbox.clear()
        link.outbox.clear()
        self.events.append(("lost", link))

    # -- the simulated upstreams -----------------------------------------------------------------------

    def fire(self, index: int) -> None:
        """Let the *index*-th ready event happen."""
        kind, what = self.events.pop(index % len(self.events))
        if kind == "open":
            ref: LinkRef = what
            node = self.nodes[ref.node]
            if ref in self.unwanted:
                self.unwanted.discard(ref)
            elif node.alive:
                self.links[ref] = SimLink(ref, node)
                self.perform(self.core.link_opened(ref))
            else:
                self.perform(self.core.link_failed(ref, f"cannot open ws://{ref.node}.invalid: refused"))
        elif kind == "lost":
            self.links.pop(what.ref, None)
            self.perform(self.core.link_lost(what.ref))
        elif kind == "take":
            self._take(what)
        elif kind == "send":
            link: SimLink = what
            if link.open and link.outbox:
                self.perform(self.core.upstream_frame(link.ref, link.outbox.popleft()))
        elif kind == "routing":
            self.perform(self.core.routing_ready(self.routable()))
        elif kind == "round":
            self.now += what
            self.new_block()  # the chain moves on while a move waits
            self.perform(self.core.health_changed())
            self.perform(self.core.round_passed())

    def _take(self, link: SimLink) -> None:
        """The node takes the oldest request of *link* and queues its answer (slow: holds subscribes)."""
        if not link.open:
            return
        held = link.node.slow
        req = next((r for r in link.inbox if not (held and r.get("method") == "eth_subscribe")), None)
        if req is None:
            return  # only held subscribes: taken once the node is quick again (``heal``)
        link.inbox.remove(req)
        if "id" not in req:
            return
        method, params = req["method"], req.get("params") or []
        notify_head = False
        if method == "eth_subscribe" and link.node.refusing:
            link.outbox.append(
                json.dumps({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32000, "message": "no"}})
            )
            self.events.append(("send", link))
            return
        if method == "eth_subscribe":
            World._sub_serial += 1
            sub_id = f"0x{World._sub_serial:032x}"
            link.subs[sub_id] = params[0]
            result: Any = sub_id
            notify_head = params[0] == "newHeads" and link.node.eager_head
        elif method == "eth_unsubscribe":
            result = link.subs.pop(params[0], None) is not None
        elif method == "eth_getBlockByNumber":
            number = self.head if params[0] == "latest" else int(params[0], 16)
            result = {"number": hex(number), "hash": block_hash(number)} if number <= self.head else None
        elif method == "eth_sendRawTransaction":
            result = block_hash(10**6 + len(link.subs))
        else:
            result = hex(self.head)
        self._emit(link, {"jsonrpc": "2.0", "id": req["id"], "result": result})
        if notify_head:
            self._emit(link, self._head_frame(sub_id, self.head))

    def _emit(self, link: SimLink, message: dict[str, Any]) -> None:
        link.outbox.append(json.dumps(message))
        self.events.append(("send", link))

    def _head_frame(self, sub_id: str, number: int) -> dict[str, Any]:
        header = {"number": hex(number), "hash": block_hash(number), "parentHash": block_hash(number - 1)}
        return {
            "jsonrpc": "2.0",
            "method": "eth_subscription",
            "params": {"subscription": sub_id, "result": header},
        }

    def new_block(self) -> None:
        """The chain grows by one; every live node notifies its newHeads subscribers."""
        self.head += 1
        for link in self.links.values():
            if link.open and link.node.alive:
                for sub_id, kind in link.subs.items():
                    if kind == "newHeads":
                        self._emit(link, self._head_frame(sub_id, self.head))
                    elif kind == "logs":
                        self._emit(
                            link,
                            {
                                "jsonrpc": "2.0",
                                "method": "eth_subscription",
                                "params": {"subscription": sub_id, "result": {"blockNumber": hex(self.head)}},
                            },
                        )

    def kill(self, name: str) -> None:
        """The node dies: its connections drop and new ones are refused."""
        node = self.nodes[name]
        node.alive = False
        for link in list(self.links.values()):
            if link.node is node and link.open:
                self._drop(link)

    def revive(self, name: str) -> None:
        self.nodes[name].alive = True

    def set_health(self, name: str, healthy: bool) -> None:
        """The monitor's verdict on a node changes; sessions re-evaluate after the round."""
        node = self.nodes[name]
        if node.healthy != healthy:
            node.healthy = healthy
            node.healthy_since = self.now
        self.perform(self.core.health_changed())

    def tick(self) -> bool:
        """Time passes up to the next timer, which fires; False when none is set."""
        if not self.timers:
            return False
        key = min(self.timers, key=lambda k: self.timers[k])
        self.now = max(self.now, self.timers.pop(key))
        self.perform(self.core.timer(key))
        return True

    def run(self, steps: int) -> bool:
        """Let up to *steps* ready events happen, oldest first, then timers; True once nothing is left."""
        for _ in range(steps):
            if self.events:
                self.fire(0)
            elif not self.tick():
                return True
        return not self.events and not self.timers

    def run_until_quiet(self) -> None:
        """Let everything happen; a world that never quiets down is a livelock."""
        if not self.run(SETTLE_LIMIT):
            raise Violation("settle", f"still busy after {SETTLE_LIMIT} steps: {self.core.status()}")

    def heal(self) -> None:
        """Every node alive, healthy for longer than failback_after, and quick; slow answers go out."""
        for node in self.nodes.values():
            node.alive = True
            node.slow = node.refusing = False
            if not node.healthy:
                node.healthy = True
                node.healthy_since = self.now
        self.now += self.cfg.failback_after
        for link in self.links.values():
            if link.open:
                self.events.extend(("take", link) for _ in link.inbox)

    def settle(self) -> None:
        """Let time pass (deadlines run out), heal the world and run health rounds until nothing more happens,
        then judge the end state."""
        self.run(60)
        self.heal()
        for _ in range(20):
            self.run_until_quiet()
            self.perform(self.core.health_changed())
            if not self.events and not self.timers:
                break
        if self.disconnected:
            return
        missing = {k: self.sent[k] - self.answered[k] for k in self.sent if self.sent[k] != self.answered[k]}
        if missing:
            raise Violation("exactly-once", f"requests sent minus responses received, by id: {missing}")
        holes = 0
        for sub_id in self.head_subs:
            got = self.heads.get(sub_id, set())
            if got:
                holes += (max(got) - min(got) + 1) - len(got)
        if holes > self.unfilled:
            raise Violation("gap", f"{holes} newHeads blocks missing, {self.unfilled} logged as unfilled")
        attached = self.core.link.node if self.core.link is not None else None
        if attached != NODES[0]:
            raise Violation("failback", f"settled on {attached}, not on the first node {NODES[0]}")

    def _event(self, event: str, level: str = "info", **fields: Any) -> None:
        if event == "ws.gap_unfilled":
            self.unfilled += fields["blocks"]

    # -- the client ------------------------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}"

    def subscribe(self, kind: str) -> None:
        req_id = self.next_id("s")
        self.subscribing[req_id] = kind
        params: list[Any] = ["newHeads"] if kind == "newHeads" else ["logs", {}]
        self.send({"jsonrpc": "2.0", "id": req_id, "method": "eth_subscribe", "params": params})

    def unsubscribe(self, sub_id: str) -> None:
        req_id = self.next_id("u")
        self.unsubscribing[req_id] = sub_id
        self.send({"jsonrpc": "2.0", "id": req_id, "method": "eth_unsubscribe", "params": [sub_id]})

    def send(self, message: Any) -> None:
        """The client sends one frame (a request or a batch); a client that has gone sends nothing."""
        if self.disconnected:
            return
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict) and "id" in item:
                self.sent[json.dumps(item["id"])] += 1
        self.perform(self.core.client_frame(json.dumps(message)))

    def disconnect(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.perform(self.core.close())

    def _client_receives(self, text: str) -> None:
        frame = json.loads(text)
        for msg in frame if isinstance(frame, list) else [frame]:
            if msg.get("method") == "eth_subscription":
                self._notification(msg["params"])
            else:
                self._response(msg)

    def _response(self, msg: dict[str, Any]) -> None:
        key = json.dumps(msg.get("id"))
        self.answered[key] += 1
        if self.answered[key] > self.sent[key]:
            raise Violation(
                "response", f"id {key} answered {self.answered[key]} times, sent {self.sent[key]}: {msg}"
            )
        result = msg.get("result")
        kind = self.subscribing.pop(msg["id"], None) if isinstance(msg.get("id"), str) else None
        if kind is not None and isinstance(result, str):
            self.held.add(result)
            if kind == "newHeads":
                self.head_subs.add(result)
        gone = self.unsubscribing.pop(msg["id"], None) if isinstance(msg.get("id"), str) else None
        if gone is not None and result is True:
            self.held.discard(gone)

    def _notification(self, params: dict[str, Any]) -> None:
        sub_id = params.get("subscription")
        if sub_id not in self.held:
            raise Violation("notification", f"under {sub_id}, which the client does not hold: {params}")
        header = params.get("result")
        if sub_id in self.head_subs and isinstance(header, dict) and "number" in header:
            number = int(header["number"], 16)
            seen = self.heads.setdefault(sub_id, set())
            if number in seen:
                raise Violation("duplicate-head", f"block {number} delivered twice to {sub_id}")
            seen.add(number)

    def _check_queue(self) -> None:
        core = self.core
        if (
            core.queued_frames > self.cfg.ws_queue_max_messages
            or core.queued_bytes > self.cfg.ws_queue_max_bytes
        ):
            raise Violation(
                "queue-bound", f"{core.queued_frames} frames / {core.queued_bytes} bytes queued during a move"
            )
