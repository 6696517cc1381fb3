"""Traffic through one session, both ways: client requests go upstream under proxy-unique ids, and answers
and subscription notifications come back under the ids the client holds (so clients may reuse ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from rpcproxy import jsonrpc
from rpcproxy.jsonrpc import encode, error, method_label, utf8_size
from rpcproxy.upstream_ws import LinkError, UpstreamLink

if TYPE_CHECKING:
    from rpcproxy.session import WsSession


class Batch:
    """Collects the answers to one client batch and sends them as one array when complete."""

    def __init__(self, session: WsSession, expected: int) -> None:
        self.session = session
        self.expected = expected
        self.answers: list[dict[str, Any]] = []

    def add(self, answer: dict[str, Any]) -> None:
        self.answers.append(answer)
        if len(self.answers) == self.expected:
            self.session.out(encode(self.answers))


class Relay:
    """The relay half of :class:`~rpcproxy.session.WsSession` (a mixin: its state is set up there)."""

    # -- client side ------------------------------------------------------------------------------------

    async def _on_client_frame(self, data: str | bytes) -> None:
        obj, problem = jsonrpc.decode(data)
        if problem is not None:
            self.out(encode(error(None, jsonrpc.PARSE_ERROR, problem)))
            return
        if self.moving:
            if self._has("drop-during-reconnect"):
                # Historical: frames arriving while the upstream was being replaced went nowhere.
                self.s.metrics.dropped.labels("during_reconnect").inc()
                return
            self._enqueue(obj, utf8_size(data))
            return
        await self._dispatch(obj)

    def _refuse(self, obj: Any, code: int, message: str) -> None:
        """Answer every request in *obj* (single or batch) with an error."""
        items = obj if isinstance(obj, list) else [obj]
        answers = [
            error(jsonrpc.id_of(i), code, message)
            for i in items
            if not (isinstance(i, dict) and "id" not in i)
        ]
        if not answers:
            self.s.metrics.dropped.labels("refused_notification").inc()
        elif isinstance(obj, list):
            self.out(encode(answers))
        else:
            self.out(encode(answers[0]))

    def _reply(self, batch: Batch | None, answer: dict[str, Any]) -> None:
        if batch is not None:
            batch.add(answer)
        else:
            self.out(encode(answer))

    async def _dispatch(self, obj: Any) -> None:
        if isinstance(obj, list):
            if not obj:
                self.out(encode(error(None, jsonrpc.INVALID_REQUEST, "invalid request: empty batch")))
                return
            if len(obj) > self.cfg.batch_limit:
                self.out(
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
            batch = Batch(self, expected)
            for item in obj:
                await self._dispatch_one(item, batch)
        else:
            await self._dispatch_one(obj, None)

    async def _dispatch_one(self, req: Any, batch: Batch | None) -> None:
        m = self.s.metrics
        problem = jsonrpc.request_problem(req)
        if problem is not None:
            m.request("ws", "invalid", "", "invalid").inc()
            self._reply(batch, error(jsonrpc.id_of(req), jsonrpc.INVALID_REQUEST, problem))
            return
        method: str = req["method"]
        has_id = "id" in req
        if self.s.policy.denied(method):
            m.request("ws", method_label(method), "", "denied").inc()
            if has_id:
                self._reply(batch, self.s.policy.deny_error(req["id"], method))
            return
        link = self.link
        if link is None:  # only while moving; callers queue instead, but stay safe
            self._resubmit([(req, batch)])
            return
        if not has_id:
            with contextlib.suppress(LinkError):
                await link.send(encode(req))
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
            started=time.monotonic(),
            batch=batch,
            sub=sub,
        )
        outgoing = dict(req, id=p.proxy_id)
        if kind == "unsubscribe":
            outgoing["params"] = params
        with contextlib.suppress(LinkError):  # the link's reader will report the close and recover p
            await link.send(encode(outgoing))

    # -- upstream side ----------------------------------------------------------------------------------

    def _on_upstream(self, link: UpstreamLink, data: str | bytes) -> None:
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):
            self.s.metrics.unmatched.labels("garbage").inc()
            return
        if not isinstance(msg, dict):
            self.s.metrics.unmatched.labels("other").inc()
            return
        if msg.get("method") == "eth_subscription":
            self._on_notification(link, msg, data)
        elif "id" in msg:
            self._on_response(link, msg, data)
        else:
            self.s.metrics.unmatched.labels("other").inc()

    def _on_response(self, link: UpstreamLink, msg: dict[str, Any], raw: str | bytes) -> None:
        m = self.s.metrics
        p = self.pending.pop(msg["id"])
        self._answered.set()
        if p is None:
            waiting = link.leaked_replays.get(encode(msg["id"])) if link.leaked_replays else None
            leaked = waiting.pop(0) if waiting else None
            if leaked is not None:
                # Historical (replay-leak): the replayed subscribe went out under the client's own id,
                # so its answer is routed like any other response - straight to the client.
                sub, future = leaked
                self.out(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
                if not future.done():
                    future.set_result(msg)
                return
            m.unmatched.labels("response").inc()
            self._event("ws.unmatched_response", "warning", upstream=link.node, id=msg.get("id"))
            return
        if p.kind in ("replay", "internal"):
            if p.future is not None and not p.future.done():
                p.future.set_result(msg)
            return
        outcome = "rpc_error" if "error" in msg else "ok"
        m.request("ws", method_label(p.method), link.node, outcome).inc()
        m.request_latency("ws", link.node).observe(time.monotonic() - p.started)
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

    def _drop_subscription(self, client_id: str) -> None:
        if self.subs.remove(client_id) is not None:
            self.s.metrics.subscriptions.dec()

    def _on_notification(self, link: UpstreamLink, msg: dict[str, Any], raw: str | bytes) -> None:
        m = self.s.metrics
        if link is not self.link:
            m.dropped.labels("stale_upstream_notification").inc()
            return
        params = msg.get("params")
        upstream_id = params.get("subscription") if isinstance(params, dict) else None
        client_id = self.subs.client_id(link, upstream_id)
        if client_id is None:
            if self._has("unmapped-subscriptions"):
                # Historical: notifications were relayed as they came, under the upstream's ids.
                self.out(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
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
            self.out(encode(msg))
        else:
            self.out(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))

    async def _internal_call(self, method: str, params: list[Any]) -> Any:
        """A request of the proxy's own on the current link; its answer never reaches the client."""
        link = self.link
        if link is None:
            return None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        p = self.pending.add(
            client_id=None,
            method=method,
            request=None,
            kind="internal",
            link=link,
            started=time.monotonic(),
            future=future,
        )
        try:
            await link.send(encode({"jsonrpc": "2.0", "id": p.proxy_id, "method": method, "params": params}))
            answer = await asyncio.wait_for(future, self.cfg.ws_resubscribe_timeout)
        except (LinkError, TimeoutError):
            self.pending.pop(p.proxy_id)
            return None
        return answer.get("result") if isinstance(answer, dict) else None
