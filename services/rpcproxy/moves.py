"""Moving a session between upstreams (on death, unhealth or failback): open the new one, re-subscribe, swap
make-before-break, then flush what was queued meanwhile; what was in flight on a lost upstream is recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from rpcproxy import jsonrpc
from rpcproxy.health import NodeHealth
from rpcproxy.jsonrpc import encode, error, method_label
from rpcproxy.tables import Pending, Subscription
from rpcproxy.upstream_ws import LinkError, UpstreamLink

if TYPE_CHECKING:
    from rpcproxy.relay import Batch


class MoveAborted(Exception):
    """A move attempt failed (connect, handshake or re-subscribe)."""


class Moves:
    """The move half of :class:`~rpcproxy.session.WsSession` (a mixin: its state is set up there)."""

    # -- the queue during a move ------------------------------------------------------------------------

    def _enqueue(self, obj: Any, size: int) -> None:
        cfg = self.cfg
        if (
            self.queued_frames >= cfg.ws_queue_max_messages
            or self.queued_bytes + size > cfg.ws_queue_max_bytes
        ):
            self.s.metrics.overflowed.inc()
            self._refuse(obj, jsonrpc.LIMIT_EXCEEDED, "proxy queue full while moving to another upstream")
            return
        if not self.queue:
            self.queue_since = time.monotonic()
        self.queue.append((obj, None, size, True))
        self.queued_bytes += size
        self.queued_frames += 1
        self.s.metrics.queued.inc()

    def _resubmit(self, items: list[tuple[dict[str, Any], Batch | None]]) -> None:
        """Requests to send again: ahead of the queue during a move, at once otherwise."""
        if self.moving or self.link is None:
            self.moving = True
            for req, batch in reversed(items):
                self.queue.appendleft((req, batch, 0, False))
            return
        for req, batch in items:
            self._spawn(self._dispatch_one(req, batch), "resend")

    async def _flush(self) -> None:
        """Send what was queued during the move, in order; only then take client frames directly again."""
        while self.queue and self.link is not None and not self.closed:
            obj, batch, size, is_frame = self.queue.popleft()
            self.queued_bytes -= size
            self.queued_frames -= is_frame
            if is_frame:
                await self._dispatch(obj)
            else:
                await self._dispatch_one(obj, batch)
        if self.link is not None:
            self.moving = False
            self.queue_since = None

    def _expire_queue(self) -> None:
        """Queued messages that waited longer than ``ws_move_timeout`` are answered with an error."""
        if not self.queue or self.queue_since is None:
            return
        if time.monotonic() - self.queue_since < self.cfg.ws_move_timeout:
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

    def _on_link_closed(self, link: UpstreamLink) -> None:
        """A link ended (death, drain, or a failed move attempt): recover its in-flight requests."""
        self._links.discard(link)
        if self.closed:
            return
        if link is self.link:
            self._event("ws.upstream_lost", "warning", upstream=link.node)
            self.link = None
            self.moving = True
            if self.attached is not None:
                self.s.metrics.sessions.labels(self.attached).dec()
                self.attached = None
            self._recover(self.pending.take_link(link), lost=True)
            self.subs.forget_link(link)
            self._request_move("upstream_closed", None, lost=link.node)
        else:
            self._recover(self.pending.take_link(link), lost=True)
            self.subs.forget_link(link)

    def _recover(self, pendings: list[Pending], *, lost: bool) -> None:
        """Re-send reads, answer the rest with an error; internal requests just fail."""
        m = self.s.metrics
        again: list[tuple[dict[str, Any], Batch | None]] = []
        for p in pendings:
            if p.kind in ("replay", "internal"):
                if p.future is not None and not p.future.done():
                    p.future.set_exception(LinkError("upstream lost"))
                continue
            if lost and self._has("drop-during-reconnect"):
                # Historical: requests in flight on the dead upstream were forgotten, never answered.
                m.dropped.labels("inflight_lost").inc()
                continue
            if self.s.policy.is_read_only(p.method) and p.request is not None:
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

    # -- moves ------------------------------------------------------------------------------------------

    def evaluate(self) -> None:
        """After each health round: leave an unhealthy upstream, or fail back to a better one."""
        if self.closed or self._move_task is not None or self.link is None:
            return
        current = self.link.node
        node = self.s.monitor.by_name[current]
        if not node.healthy:
            if self.s.monitor.pick({current}) is not None:
                self._request_move("unhealthy", None)
            return
        if self._has("no-failback"):
            return  # Historical: a session only ever left an upstream that had turned unhealthy.
        target = self.s.monitor.failback_target(current)
        if target is not None:
            self._request_move("failback", target)

    def _request_move(self, reason: str, target: NodeHealth | None, lost: str | None = None) -> None:
        if self._move_task is None and not self.closed:
            self._move_task = asyncio.create_task(
                self._move(reason, target, lost), name=f"session-{self.id}-move"
            )

    async def _candidates(self, exclude: set[str]) -> list[NodeHealth]:
        healthy = await self.s.monitor.routable()
        preferred = [n for n in healthy if n.name not in exclude]
        return preferred or healthy

    async def _move(self, reason: str, target: NodeHealth | None, lost: str | None = None) -> None:
        """Find a node, open it, re-subscribe, swap, flush the queue. *lost* names the upstream just lost."""
        started = time.monotonic()
        origin = self.link.node if self.link else lost
        self.move_reason = reason
        avoid = {origin} if origin and reason in ("unhealthy", "upstream_closed") else set()
        tried: set[str] = set()
        new: UpstreamLink | None = None
        try:
            while not self.closed:
                must_move = self.link is None
                if target is not None and not tried and target.healthy:
                    node: NodeHealth | None = target
                else:
                    if not must_move and reason == "failback":
                        break
                    choices = [n for n in await self._candidates(avoid) if n.name not in tried]
                    node = choices[0] if choices else None
                if node is None or (not must_move and node.name == (self.link.node if self.link else None)):
                    if not must_move or (
                        reason == "initial" and time.monotonic() - started > self.cfg.ws_move_timeout
                    ):
                        break  # nowhere better to go: stay (or, for a new session, give up)
                    tried.clear()
                    await self.s.monitor.next_round(self.cfg.health_interval * 2)
                    self._expire_queue()
                    continue
                if not must_move:
                    self.moving = True
                try:
                    new = await self._attach(node)
                    break
                except MoveAborted as exc:
                    self.s.metrics.moves.labels(reason, "failed").inc()
                    self._event(
                        "ws.move_attempt_failed", "warning", reason=reason, to=node.name, error=str(exc)
                    )
                    tried.add(node.name)
                    must_move = self.link is None
                    if not must_move and reason == "failback":
                        break
                    if must_move:
                        await self.s.monitor.next_round(self.cfg.health_interval)
                        self._expire_queue()
            if new is not None:
                self._swap(new, reason, origin, started)
            await self._flush()
        finally:
            if self._move_task is asyncio.current_task():
                self._move_task = None
            self.move_reason = None
        if self.link is None and not self.closed and reason != "initial":
            self._request_move("upstream_closed", None)  # the link died while this move was failing

    async def _attach(self, node: NodeHealth) -> UpstreamLink:
        try:
            link = await UpstreamLink.open(node.spec, self.cfg)
        except LinkError as exc:
            raise MoveAborted(str(exc)) from None
        self._links.add(link)
        link.start(self._on_upstream, self._on_link_closed)
        try:
            await asyncio.wait_for(self._resubscribe(link), self.cfg.ws_resubscribe_timeout)
        except (TimeoutError, LinkError) as exc:
            self.s.metrics.replayed.labels("timeout").inc()
            await link.close()
            raise MoveAborted(f"re-subscribe on {node.name} failed: {type(exc).__name__} {exc}") from None
        if link.closed:  # it died before becoming current: its close was handled as a stray link's
            raise MoveAborted(f"{node.name} closed the connection during the move")
        return link

    async def _resubscribe(self, link: UpstreamLink) -> None:
        """Subscribe *link* to everything the client holds, then bind the new ids to the client's."""
        loop = asyncio.get_running_loop()
        waits: list[tuple[Subscription, asyncio.Future[Any]]] = []
        for sub in self.subs:
            future: asyncio.Future[Any] = loop.create_future()
            if self._has("replay-leak"):
                # Historical: replay the client's own eth_subscribe, under the client's own request id.
                link.leaked_replays.setdefault(encode(sub.request_id), []).append((sub, future))
                request_id: Any = sub.request_id
            else:
                request_id = self.pending.add(
                    client_id=None,
                    method="eth_subscribe",
                    request=None,
                    kind="replay",
                    link=link,
                    started=time.monotonic(),
                    future=future,
                    sub=sub,
                ).proxy_id
            await link.send(
                encode({"jsonrpc": "2.0", "id": request_id, "method": "eth_subscribe", "params": sub.params})
            )
            waits.append((sub, future))
        for sub, future in waits:
            answer = await future
            result = answer.get("result") if isinstance(answer, dict) else None
            if not isinstance(result, str):
                self.s.metrics.replayed.labels("error").inc()
                self._event(
                    "ws.resubscribe_failed",
                    "warning",
                    upstream=link.node,
                    subscription=sub.client_id,
                    answer=answer,
                )
                continue
            self.s.metrics.replayed.labels("ok").inc()
            if self._has("unmapped-subscriptions"):
                continue  # Historical: the new upstream id was never mapped back to the client's id.
            self.subs.bind(link, result, sub.client_id)

    def _swap(self, new: UpstreamLink, reason: str, origin: str | None, started: float) -> None:
        m = self.s.metrics
        old = self.link
        self.link = new
        if self.attached is not None:
            m.sessions.labels(self.attached).dec()
        m.sessions.labels(new.node).inc()
        self.attached = new.node
        self.moves += 1
        resent = 0
        if old is not None and not old.closed:
            if reason == "unhealthy":  # reads waiting on a sick node are re-sent now; writes may finish there
                reads = [
                    p
                    for p in self.pending.on_link(old)
                    if self.s.policy.is_read_only(p.method) and p.kind != "replay"
                ]
                for p in reads:
                    self.pending.pop(p.proxy_id)
                resent = len(reads)
                self._recover(reads, lost=False)
            self._spawn(self._drain(old), "drain")
        m.moves.labels(reason, "ok").inc()
        self._event(
            "ws.moved",
            "warning" if reason != "initial" else "info",
            reason=reason,
            from_upstream=origin,
            to_upstream=new.node,
            subscriptions=len(self.subs),
            queued=len(self.queue),
            resent=resent,
            seconds=round(time.monotonic() - started, 4),
        )

    async def _drain(self, old: UpstreamLink) -> None:
        """Make-before-break: let the old link answer what it has in flight, then close it."""
        deadline = time.monotonic() + self.cfg.ws_drain_timeout
        while self.pending.on_link(old) and not old.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), remaining)
        await old.close()
