"""The WebSocket session core: everything one client session decides, with no I/O.

It owns the id and subscription tables, the requests in flight, the queue during a move and the move
itself. It is driven by events (a client frame, an upstream frame, a link opened, failed or lost, a
health change, a health round passed, a timer) and each event returns the actions to perform (frames to
the client or to a link, open or close a link, start a timer, wait for a health round); see ``wsactions``.
The asyncio layer (``session``, ``mover``) only carries frames and timers for it, and a test can drive it
in-process against simulated upstreams.

What it guarantees (each defect switch marks the branch where the historical proxy did otherwise):
- every client request goes upstream under a proxy-unique id and its answer comes back under the client's
  id, exactly once; ids may be reused and many requests may be in flight;
- the subscription ids the client holds never change: after a move the proxy re-subscribes under its own
  ids, swallows those answers and maps the new upstream ids back to the client's;
- during a move client messages wait in a bounded queue and are flushed, in order, once the new upstream
  is subscribed; overflow is answered with errors;
- requests in flight on a lost upstream are re-sent when read-only, answered with an error otherwise;
- a failback is make-before-break; newHeads are de-duplicated across moves and gaps filled (``heads``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from rpcproxy import jsonrpc
from rpcproxy.config import ProxyConfig
from rpcproxy.heads import HeadFeed
from rpcproxy.jsonrpc import encode, error, method_label, utf8_size
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.tables import IdAllocator, Pending, PendingTable, Subscription, SubscriptionTable
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

SESSION_DEFECTS = frozenset({"replay-leak", "unmapped-subscriptions", "drop-during-reconnect", "no-failback"})


class Health(Protocol):
    """What the core reads of the health monitor (node names in routing order, primaries first)."""

    def healthy(self, node: str) -> bool: ...

    def routable(self) -> list[str]: ...

    def pick(self, exclude: set[str]) -> str | None: ...

    def failback_target(self, current: str) -> str | None: ...


class Batch:
    """Collects the answers to one client batch; the last one completes it as one array."""

    __slots__ = ("answers", "expected")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.answers: list[dict[str, Any]] = []

    def add(self, answer: dict[str, Any]) -> str | None:
        """Record *answer*; the batch's frame once every answer is in, else None."""
        self.answers.append(answer)
        return encode(self.answers) if len(self.answers) == self.expected else None


# One queued item: (message, batch, bytes, is_frame). A client frame counts against the caps; a request
# put back at the front (a re-send of an accepted request) does not.
Queued = tuple[Any, Batch | None, int, bool]


@dataclass(eq=False)
class LinkState:
    """The core's view of one upstream link."""

    opened: bool = False
    lost: bool = False
    closing: bool = False
    draining: bool = False
    # replay-leak defect only: client request id (JSON text) -> subscriptions replayed under it
    leaked_replays: dict[str, list[Subscription]] = field(default_factory=dict)


@dataclass(eq=False)
class Move:
    """A move in progress: why, where to, what was tried, and which event it waits for."""

    reason: str
    target: str | None
    started: float
    origin: str | None
    avoid: set[str]
    tried: set[str] = field(default_factory=set)
    waiting: str = ""  # "routing" | "round" | "open" | "resub" | "" (running)
    attempt: LinkRef | None = None  # the link being opened and re-subscribed
    outstanding: int = 0  # re-subscribe answers still awaited


class SessionCore:
    """One client WebSocket session's state and decisions; see the module docstring."""

    def __init__(
        self,
        config: ProxyConfig,
        metrics: ProxyMetrics,
        policy: jsonrpc.MethodPolicy,
        ids: IdAllocator,
        health: Health,
        *,
        defects: frozenset[str] = frozenset(),
        clock: Callable[[], float],
        event: Callable[..., None] = lambda *a, **k: None,
        gate_routing: bool = False,
    ) -> None:
        self.cfg = config
        self.metrics = metrics
        self.policy = policy
        self.health = health
        self.defects = defects
        self.clock = clock
        self.event = event
        self.gate_routing = gate_routing  # ask the driver before reading the nodes (serialized monitor)
        self.pending = PendingTable(ids)
        self.subs = SubscriptionTable()
        self.link: LinkRef | None = None
        self.attached: str | None = None  # upstream this session is counted under in the sessions gauge
        self.links: dict[LinkRef, LinkState] = {}
        self.moving = False
        self.move: Move | None = None
        self.moves = 0
        self.closed = False
        self.queue: deque[Queued] = deque()
        self.queued_bytes = 0
        self.queued_frames = 0  # client frames in the queue
        self.queue_since: float | None = None
        self.heads = HeadFeed(
            config,
            metrics,
            out=self._head_to_client,
            call=self._internal_call,
            holds=lambda client_id: client_id in self.subs,
            event=event,
        )
        self._actions: list[Action] = []

    def _has(self, defect: str) -> bool:
        return defect in self.defects

    def _take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def _to_client(self, text: str) -> None:
        if not self.closed:
            self._actions.append(ToClient(text))

    def _head_to_client(self, text: str) -> None:
        if not self.closed:
            self._actions.append(ToClient(text, heads=True))

    def status(self) -> dict[str, Any]:
        return {
            "upstream": self.attached,
            "moving": self.moving,
            "moves": self.moves,
            "subscriptions": len(self.subs),
            "in_flight": len(self.pending),
            "queued": len(self.queue),
        }

    # -- events -----------------------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """A new client session: find it an upstream (``Ready`` says how that ended)."""
        self.metrics.ws_clients.inc()
        self.moving = True
        self._begin_move("initial", None, None)
        return self._take()

    def client_frame(self, data: str | bytes) -> list[Action]:
        """One frame from the client."""
        if self.closed:
            return []
        obj, problem = jsonrpc.decode(data)
        if problem is not None:
            self._to_client(encode(error(None, jsonrpc.PARSE_ERROR, problem)))
        elif self.moving:
            if self._has("drop-during-reconnect"):
                # Historical: frames arriving while the upstream was being replaced went nowhere.
                self.metrics.dropped.labels("during_reconnect").inc()
            else:
                self._enqueue(obj, utf8_size(data))
        else:
            self._dispatch(obj)
        return self._take()

    def upstream_frame(self, link: LinkRef, data: str | bytes) -> list[Action]:
        """One frame from an upstream link."""
        msg, problem = jsonrpc.decode(data, constants=True)
        if problem is not None:
            self.metrics.unmatched.labels("garbage").inc()
            return self._take()
        if not isinstance(msg, dict):
            self.metrics.unmatched.labels("other").inc()
        elif msg.get("method") == "eth_subscription":
            self._on_notification(link, msg, data)
        elif "id" in msg:
            self._on_response(link, msg, data)
        else:
            self.metrics.unmatched.labels("other").inc()
        return self._take()

    def link_opened(self, link: LinkRef) -> list[Action]:
        """The WebSocket of an ``OpenLink`` is up: re-subscribe on it (or close it if no longer wanted)."""
        state = self.links.get(link)
        mv = self.move
        if state is None or self.closed or mv is None or mv.attempt is not link or mv.waiting != "open":
            self._close_link(link)
            return self._take()
        state.opened = True
        self._resubscribe(mv, link, state)
        return self._take()

    def link_failed(self, link: LinkRef, problem: str) -> list[Action]:
        """An ``OpenLink`` could not connect or handshake."""
        state = self.links.pop(link, None)
        mv = self.move
        if state is not None and mv is not None and mv.attempt is link and mv.waiting == "open":
            self._attempt_failed(mv, problem)
        return self._take()

    def link_lost(self, link: LinkRef) -> list[Action]:
        """A link ended (death, drain, or a failed move attempt): recover its in-flight requests."""
        state = self.links.pop(link, None)
        if state is None or self.closed:
            return self._take()
        state.lost = True
        if link is self.link:
            self.event("ws.upstream_lost", "warning", upstream=link.node)
            self.link = None
            self.moving = True
            if self.attached is not None:
                self.metrics.sessions.labels(self.attached).dec()
                self.attached = None
            self._recover(self.pending.take_link(link), lost=True)
            self.subs.forget_link(link)
            self._request_move("upstream_closed", None, lost=link.node)
        else:
            self._recover(self.pending.take_link(link), lost=True)
            self.subs.forget_link(link)
            mv = self.move
            if (
                mv is not None
                and mv.attempt is link
                and mv.waiting == "resub"
                and mv.outstanding
                and not self._has("replay-leak")  # leaked replays are not in flight: they wait for the timer
            ):
                self.metrics.replayed.labels("timeout").inc()
                self._attempt_failed(mv, f"re-subscribe on {link.node} failed: LinkError upstream lost")
        return self._take()

    def health_changed(self) -> list[Action]:
        """After each health round: leave an unhealthy upstream, or fail back to a better one."""
        if self.closed or self.move is not None or self.link is None:
            return self._take()
        current = self.link.node
        if not self.health.healthy(current):
            if self.health.pick({current}) is not None:
                self._request_move("unhealthy", None)
            return self._take()
        if self._has("no-failback"):
            return self._take()  # Historical: a session only ever left an upstream that had turned unhealthy.
        target = self.health.failback_target(current)
        if target is not None:
            self._request_move("failback", target)
        return self._take()

    def routing_ready(self, healthy: list[str]) -> list[Action]:
        """The healthy nodes, read once routing was free (``WaitRouting``)."""
        mv = self.move
        if mv is not None and mv.waiting == "routing" and not self.closed:
            mv.waiting = ""
            self._move_loop(mv, healthy)
        return self._take()

    def round_passed(self) -> list[Action]:
        """A health round completed (or the wait for one ran out) while a move waited for it."""
        mv = self.move
        if mv is not None and mv.waiting == "round" and not self.closed:
            mv.waiting = ""
            self._expire_queue()
            self._move_loop(mv)
        return self._take()

    def timer(self, key: Hashable) -> list[Action]:
        """A ``StartTimer`` ran out."""
        if self.closed or not isinstance(key, tuple):
            return self._take()
        kind, what = key
        if kind == "call":
            p = self.pending.pop(what)
            if p is not None and p.waiter is not None:
                p.waiter(None)
                self._drained(p.link)
        elif kind == "drain":
            self._close_link(what)
        elif kind == "resub":
            mv = self.move
            if mv is not None and mv.attempt is what and mv.waiting == "resub":
                self.metrics.replayed.labels("timeout").inc()
                self._close_link(what)  # its replays in flight are dropped when its loss is reported
                self._attempt_failed(mv, f"re-subscribe on {what.node} failed: TimeoutError ")
        return self._take()

    def close(self) -> list[Action]:
        """The client is gone: close every link and release the session's share of the gauges."""
        if self.closed:
            return self._take()
        for link in list(self.links):
            self._close_link(link)
        self.closed = True
        self.move = None
        m = self.metrics
        m.ws_clients.dec()
        if self.attached is not None:
            m.sessions.labels(self.attached).dec()
            self.attached = None
        m.subscriptions.dec(len(self.subs))
        self.subs = SubscriptionTable()
        self.event("ws.session_closed", moves=self.moves)
        return self._take()

    # -- client side ------------------------------------------------------------------------------------

    def _refuse(self, obj: Any, code: int, message: str) -> None:
        """Answer every request in *obj* (single or batch) with an error."""
        items = obj if isinstance(obj, list) else [obj]
        answers = [
            error(jsonrpc.id_of(i), code, message)
            for i in items
            if not (isinstance(i, dict) and "id" not in i)
        ]
        if not answers:
            self.metrics.dropped.labels("refused_notification").inc()
        elif isinstance(obj, list):
            self._to_client(encode(answers))
        else:
            self._to_client(encode(answers[0]))

    def _reply(self, batch: Batch | None, answer: dict[str, Any]) -> None:
        if batch is None:
            self._to_client(encode(answer))
        else:
            frame = batch.add(answer)
            if frame is not None:
                self._to_client(frame)

    def _dispatch(self, obj: Any) -> None:
        if not isinstance(obj, list):
            self._dispatch_one(obj, None)
            return
        if not obj:
            self._to_client(encode(error(None, jsonrpc.INVALID_REQUEST, "invalid request: empty batch")))
            return
        if len(obj) > self.cfg.batch_limit:
            self._to_client(
                encode(
                    error(
                        None,
                        jsonrpc.LIMIT_EXCEEDED,
                        f"batch of {len(obj)} exceeds the limit of {self.cfg.batch_limit}",
                    )
                )
            )
            return
        expected = sum(
            1
            for i in obj
            if not (isinstance(i, dict) and "id" not in i and jsonrpc.request_problem(i) is None)
        )
        batch = Batch(expected)
        for item in obj:
            self._dispatch_one(item, batch)

    def _dispatch_one(self, req: Any, batch: Batch | None) -> None:
        m = self.metrics
        problem = jsonrpc.request_problem(req)
        if problem is not None:
            m.request("ws", "invalid", "", "invalid").inc()
            self._reply(batch, error(jsonrpc.id_of(req), jsonrpc.INVALID_REQUEST, problem))
            return
        method: str = req["method"]
        has_id = "id" in req
        if self.policy.denied(method):
            m.request("ws", method_label(method), "", "denied").inc()
            if has_id:
                self._reply(batch, self.policy.deny_error(req["id"], method))
            return
        link = self.link
        if link is None:  # only while moving; callers queue instead, but stay safe
            self._resubmit([(req, batch)])
            return
        if not has_id:
            self._actions.append(ToLink(link, encode(req)))
            return
        if len(self.pending) >= self.cfg.ws_max_inflight:
            m.request("ws", method_label(method), "", "limited").inc()
            self._reply(
                batch,
                error(
                    req["id"],
                    jsonrpc.LIMIT_EXCEEDED,
                    f"more than {self.cfg.ws_max_inflight} requests in flight on this session",
                ),
            )
            return
        kind, sub, params = "call", None, req.get("params")
        if method == "eth_subscribe":
            if len(self.subs) + self.pending.count(("subscribe",)) >= self.cfg.ws_max_subscriptions:
                m.request("ws", method, "", "limited").inc()
                self._reply(
                    batch,
                    error(
                        req["id"],
                        jsonrpc.LIMIT_EXCEEDED,
                        f"more than {self.cfg.ws_max_subscriptions} subscriptions on this session",
                    ),
                )
                return
            kind = "subscribe"
        elif method == "eth_unsubscribe" and isinstance(params, list) and params and params[0] in self.subs:
            sub = self.subs.subs[params[0]]
            upstream_id = self.subs.upstream_id(link, sub.client_id)
            if upstream_id is None:  # not subscribed on this upstream (its re-subscribe failed): local
                self._drop_subscription(sub.client_id)
                self._reply(batch, {"jsonrpc": "2.0", "id": req["id"], "result": True})
                return
            kind, params = "unsubscribe", [upstream_id, *params[1:]]
        p = self.pending.add(
            client_id=req["id"],
            method=method,
            request=req,
            kind=kind,
            link=link,
            started=self.clock(),
            batch=batch,
            sub=sub,
        )
        outgoing = dict(req, id=p.proxy_id)
        if kind == "unsubscribe":
            outgoing["params"] = params
        self._actions.append(ToLink(link, encode(outgoing)))

    # -- upstream side ----------------------------------------------------------------------------------

    def _on_response(self, link: LinkRef, msg: dict[str, Any], raw: str | bytes) -> None:
        m = self.metrics
        p = self.pending.pop(msg["id"])
        if p is None:
            state = self.links.get(link)
            waiting = state.leaked_replays.get(encode(msg["id"])) if state and state.leaked_replays else None
            if waiting:
                # Historical (replay-leak): the replayed subscribe went out under the client's own id,
                # so its answer is routed like any other response - straight to the client.
                sub = waiting.pop(0)
                self._to_client(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
                self._replayed(link, sub, msg)
                return
            m.unmatched.labels("response").inc()
            self.event("ws.unmatched_response", "warning", upstream=link.node, id=msg.get("id"))
            return
        if p.kind == "replay":
            assert p.sub is not None
            self._replayed(link, p.sub, msg)
            return
        if p.kind == "internal":
            self._actions.append(CancelTimer(("call", p.proxy_id)))
            if p.waiter is not None:
                p.waiter(msg.get("result"))
            self._drained(link)
            return
        outcome = "rpc_error" if "error" in msg else "ok"
        m.request("ws", method_label(p.method), link.node, outcome).inc()
        m.request_latency("ws", link.node).observe(self.clock() - p.started)
        if p.kind == "subscribe" and isinstance(msg.get("result"), str):
            sub = self.subs.add(
                link, msg["result"], list(p.request.get("params") or []) if p.request else [], p.client_id
            )
            msg["result"] = sub.client_id
            m.subscriptions.inc()
        elif p.kind == "unsubscribe" and p.sub is not None and "error" not in msg:
            self._drop_subscription(p.sub.client_id)
        msg["id"] = p.client_id
        self._reply(p.batch, msg)
        self._drained(link)

    def _drop_subscription(self, client_id: str) -> None:
        if self.subs.remove(client_id) is not None:
            self.metrics.subscriptions.dec()

    def _on_notification(self, link: LinkRef, msg: dict[str, Any], raw: str | bytes) -> None:
        m = self.metrics
        if link is not self.link:
            m.dropped.labels("stale_upstream_notification").inc()
            return
        params = msg.get("params")
        upstream_id = params.get("subscription") if isinstance(params, dict) else None
        client_id = self.subs.client_id(link, upstream_id)
        if client_id is None:
            if self._has("unmapped-subscriptions"):
                # Historical: notifications were relayed as they came, under the upstream's ids.
                self._to_client(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
                return
            m.unmatched.labels("notification").inc()
            return
        sub = self.subs.subs.get(client_id)
        if sub is None:
            return
        assert isinstance(params, dict)
        if sub.heads is not None and isinstance(params.get("result"), dict):
            self.heads.put(sub, params["result"])
            return
        if client_id != upstream_id:
            msg["params"] = dict(params, subscription=client_id)
            self._to_client(encode(msg))
        else:
            self._to_client(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))

    def _internal_call(self, method: str, params: list[Any], done: Callable[[Any], None]) -> None:
        """A request of the proxy's own on the current link; *done* gets its result (None if none came)."""
        link = self.link
        if link is None:
            done(None)
            return
        p = self.pending.add(
            client_id=None,
            method=method,
            request=None,
            kind="internal",
            link=link,
            started=self.clock(),
            waiter=done,
        )
        self._actions.append(
            ToLink(link, encode({"jsonrpc": "2.0", "id": p.proxy_id, "method": method, "params": params}))
        )
        self._actions.append(StartTimer(("call", p.proxy_id), self.cfg.ws_resubscribe_timeout))

    # -- the queue during a move ------------------------------------------------------------------------

    def _enqueue(self, obj: Any, size: int) -> None:
        cfg = self.cfg
        if (
            self.queued_frames >= cfg.ws_queue_max_messages
            or self.queued_bytes + size > cfg.ws_queue_max_bytes
        ):
            self.metrics.overflowed.inc()
            self._refuse(obj, jsonrpc.LIMIT_EXCEEDED, "proxy queue full while moving to another upstream")
            return
        if not self.queue:
            self.queue_since = self.clock()
        self.queue.append((obj, None, size, True))
        self.queued_bytes += size
        self.queued_frames += 1
        self.metrics.queued.inc()

    def _resubmit(self, items: list[tuple[dict[str, Any], Batch | None]]) -> None:
        """Requests to send again: ahead of the queue during a move, at once otherwise."""
        if self.moving or self.link is None:
            self.moving = True
            for req, batch in reversed(items):
                self.queue.appendleft((req, batch, 0, False))
            return
        for req, batch in items:
            self._dispatch_one(req, batch)

    def _flush(self) -> None:
        """Send what was queued during the move, in order; only then take client frames directly again."""
        while self.queue and self.link is not None and not self.closed:
            obj, batch, size, is_frame = self.queue.popleft()
            self.queued_bytes -= size
            self.queued_frames -= is_frame
            if is_frame:
                self._dispatch(obj)
            else:
                self._dispatch_one(obj, batch)
        if self.link is not None:
            self.moving = False
            self.queue_since = None

    def _expire_queue(self) -> None:
        """Queued messages that waited longer than ``ws_move_timeout`` are answered with an error."""
        if not self.queue or self.queue_since is None:
            return
        if self.clock() - self.queue_since < self.cfg.ws_move_timeout:
            return
        while self.queue:
            obj, batch, _size, is_frame = self.queue.popleft()
            if is_frame:
                self._refuse(obj, jsonrpc.UPSTREAM_UNAVAILABLE, "no upstream available")
            elif isinstance(obj, dict) and "id" in obj:
                self._reply(batch, error(obj["id"], jsonrpc.UPSTREAM_UNAVAILABLE, "no upstream available"))
        self.queued_bytes = self.queued_frames = 0
        self.queue_since = None

    # -- losing an upstream -----------------------------------------------------------------------------

    def _recover(self, pendings: list[Pending], *, lost: bool) -> None:
        """Re-send reads, answer the rest with an error; internal requests just fail."""
        m = self.metrics
        again: list[tuple[dict[str, Any], Batch | None]] = []
        for p in pendings:
            if p.kind == "replay":
                continue  # the move attempt that sent it sees the loss (``link_lost``)
            if p.kind == "internal":
                self._actions.append(CancelTimer(("call", p.proxy_id)))
                if p.waiter is not None:
                    p.waiter(None)
                continue
            if lost and self._has("drop-during-reconnect"):
                # Historical: requests in flight on the dead upstream were forgotten, never answered.
                m.dropped.labels("inflight_lost").inc()
                continue
            if self.policy.is_read_only(p.method) and p.request is not None:
                m.resent.inc()
                again.append((p.request, p.batch))
            else:
                m.failed_inflight.inc()
                m.request("ws", method_label(p.method), str(p.link.node), "upstream_error").inc()
                self._reply(
                    p.batch,
                    error(
                        p.client_id,
                        jsonrpc.UPSTREAM_UNAVAILABLE,
                        "upstream connection lost while the request was in flight; "
                        "not retried because the method may not be idempotent",
                    ),
                )
        if again:
            self._resubmit(again)

    def _close_link(self, link: LinkRef) -> None:
        state = self.links.get(link)
        if state is not None and not state.closing:
            state.closing = True
            self._actions.append(CloseLink(link))

    def _drained(self, link: Any) -> None:
        """Make-before-break: a draining link closes once nothing is in flight on it."""
        state = self.links.get(link)
        if state is not None and state.draining and not self.pending.on_link(link):
            self._actions.append(CancelTimer(("drain", link)))
            self._close_link(link)

    # -- moves ------------------------------------------------------------------------------------------

    def _request_move(self, reason: str, target: str | None, lost: str | None = None) -> None:
        if self.move is None and not self.closed:
            self._begin_move(reason, target, lost)

    def _begin_move(self, reason: str, target: str | None, lost: str | None) -> None:
        origin = self.link.node if self.link else lost
        avoid = {origin} if origin and reason in ("unhealthy", "upstream_closed") else set()
        mv = self.move = Move(reason, target, self.clock(), origin, avoid)
        self._move_loop(mv)

    def _move_loop(self, mv: Move, healthy: list[str] | None = None) -> None:
        """Find a node and start attaching to it, or wait for routing or a health round, or give up."""
        while not self.closed:
            must_move = self.link is None
            if mv.target is not None and not mv.tried and self.health.healthy(mv.target):
                node: str | None = mv.target
            else:
                if not must_move and mv.reason == "failback":
                    break
                if healthy is None:
                    if self.gate_routing:
                        mv.waiting = "routing"
                        self._actions.append(WaitRouting())
                        return
                    healthy = self.health.routable()
                preferred = [n for n in healthy if n not in mv.avoid]
                choices = [n for n in (preferred or healthy) if n not in mv.tried]
                healthy = None
                node = choices[0] if choices else None
            if node is None or (not must_move and node == (self.link.node if self.link else None)):
                if not must_move or (
                    mv.reason == "initial" and self.clock() - mv.started > self.cfg.ws_move_timeout
                ):
                    break  # nowhere better to go: stay (or, for a new session, give up)
                mv.tried.clear()
                mv.waiting = "round"
                self._actions.append(WaitRound(self.cfg.health_interval * 2))
                return
            if not must_move:
                self.moving = True
            link = mv.attempt = LinkRef(node)
            self.links[link] = LinkState()
            mv.waiting = "open"
            self._actions.append(OpenLink(link))
            return
        self._finish_move(mv, None)

    def _resubscribe(self, mv: Move, link: LinkRef, state: LinkState) -> None:
        """Subscribe *link* to everything the client holds; the answers are bound as they come."""
        subs = list(self.subs)
        mv.waiting = "resub"
        mv.outstanding = len(subs)
        for sub in subs:
            if self._has("replay-leak"):
                # Historical: replay the client's own eth_subscribe, under the client's own request id.
                state.leaked_replays.setdefault(encode(sub.request_id), []).append(sub)
                request_id: Any = sub.request_id
            else:
                request_id = self.pending.add(
                    client_id=None,
                    method="eth_subscribe",
                    request=None,
                    kind="replay",
                    link=link,
                    started=self.clock(),
                    sub=sub,
                ).proxy_id
            self._actions.append(
                ToLink(
                    link,
                    encode(
                        {"jsonrpc": "2.0", "id": request_id, "method": "eth_subscribe", "params": sub.params}
                    ),
                )
            )
        if subs:
            self._actions.append(StartTimer(("resub", link), self.cfg.ws_resubscribe_timeout))
        else:
            self._resubscribed(mv, link)

    def _replayed(self, link: LinkRef, sub: Subscription, answer: dict[str, Any]) -> None:
        """One re-subscribe answer: bind the new upstream id to the client's."""
        mv = self.move
        if mv is None or mv.attempt is not link or mv.waiting != "resub":
            return
        result = answer.get("result")
        if not isinstance(result, str):
            self.metrics.replayed.labels("error").inc()
            self.event(
                "ws.resubscribe_failed",
                "warning",
                upstream=link.node,
                subscription=sub.client_id,
                answer=answer,
            )
        else:
            self.metrics.replayed.labels("ok").inc()
            if not self._has("unmapped-subscriptions"):
                # (Historical, unmapped-subscriptions: the new upstream id was never mapped back.)
                self.subs.bind(link, result, sub.client_id)
        mv.outstanding -= 1
        if mv.outstanding == 0:
            self._actions.append(CancelTimer(("resub", link)))
            self._resubscribed(mv, link)

    def _resubscribed(self, mv: Move, link: LinkRef) -> None:
        state = self.links.get(link)
        if state is None or state.lost:  # it died before becoming current
            self._attempt_failed(mv, f"{link.node} closed the connection during the move")
            return
        self._finish_move(mv, link)

    def _attempt_failed(self, mv: Move, problem: str) -> None:
        link = mv.attempt
        assert link is not None
        mv.attempt = None
        mv.waiting = ""
        self.metrics.moves.labels(mv.reason, "failed").inc()
        self.event("ws.move_attempt_failed", "warning", reason=mv.reason, to=link.node, error=problem)
        mv.tried.add(link.node)
        must_move = self.link is None
        if not must_move and mv.reason == "failback":
            self._finish_move(mv, None)
        elif must_move:
            mv.waiting = "round"
            self._actions.append(WaitRound(self.cfg.health_interval))
        else:
            self._move_loop(mv)

    def _finish_move(self, mv: Move, new: LinkRef | None) -> None:
        if new is not None:
            self._swap(new, mv)
        self._flush()
        self.move = None
        if mv.reason == "initial":
            self._actions.append(Ready(self.link is not None))
        elif self.link is None and not self.closed:
            self._request_move("upstream_closed", None)  # the link died while this move was failing

    def _swap(self, new: LinkRef, mv: Move) -> None:
        m = self.metrics
        old = self.link
        self.link = new
        if self.attached is not None:
            m.sessions.labels(self.attached).dec()
        m.sessions.labels(new.node).inc()
        self.attached = new.node
        self.moves += 1
        resent = 0
        old_state = self.links.get(old) if old is not None else None
        if old is not None and old_state is not None and not old_state.lost:
            if (
                mv.reason == "unhealthy"
            ):  # reads waiting on a sick node are re-sent now; writes may finish there
                reads = [
                    p
                    for p in self.pending.on_link(old)
                    if self.policy.is_read_only(p.method) and p.kind != "replay"
                ]
                for p in reads:
                    self.pending.pop(p.proxy_id)
                resent = len(reads)
                self._recover(reads, lost=False)
            old_state.draining = True
            if self.pending.on_link(old):
                self._actions.append(StartTimer(("drain", old), self.cfg.ws_drain_timeout))
            else:
                self._close_link(old)
        m.moves.labels(mv.reason, "ok").inc()
        self.event(
            "ws.moved",
            "warning" if mv.reason != "initial" else "info",
            reason=mv.reason,
            from_upstream=mv.origin,
            to_upstream=new.node,
            subscriptions=len(self.subs),
            queued=len(self.queue),
            resent=resent,
            seconds=round(self.clock() - mv.started, 4),
        )
