"""The proxy process: health monitor, HTTP forwarder and WebSocket sessions behind one aiohttp app.

Routes: ``POST /`` JSON-RPC, ``GET /ws`` WebSocket, ``GET /status`` JSON, ``GET /health``, ``GET /metrics``.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from aiohttp import web
from servicekit import JsonLogger

from rpcproxy import jsonrpc
from rpcproxy.config import ProxyConfig
from rpcproxy.health import CheckResult, HealthMonitor
from rpcproxy.httpproxy import HttpForwarder
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.session import Shared, WsSession
from rpcproxy.tables import IdAllocator

DEFECTS = {
    "replay-leak": "on reconnection, re-send each tracked eth_subscribe under the client's original request "
    "id and forward the upstream's answer to the client",
    "unmapped-subscriptions": "new upstream subscription ids are not mapped back to the ids the client holds",
    "drop-during-reconnect": "client frames arriving while the upstream is replaced are discarded; requests "
    "in flight on the lost upstream are never answered",
    "no-failback": "a session moves only when its current upstream is unhealthy (never back to a recovered "
    "primary)",
    "health-without-timeout": "health checks run one after another, with no deadline, holding the lock "
    "that request routing needs",
    "client-per-request": "a new upstream HTTP connection for every request (no pooling)",
}


class Proxy:
    """One proxy instance: owns its metrics registry, monitor, forwarder and sessions."""

    def __init__(self, config: ProxyConfig, defects: frozenset[str], log: JsonLogger) -> None:
        self.config = config
        self.defects = defects
        self.log = log
        self.metrics = ProxyMetrics([u.name for u in config.upstreams])
        self.monitor = HealthMonitor(
            config, defects, on_check=self._on_check, on_transition=self._on_transition
        )
        self.policy = jsonrpc.MethodPolicy(config.deny_prefixes, config.extra_read_only_methods)
        self.http = HttpForwarder(config, self.monitor, self.metrics, log, defects, self.policy)
        self.shared = Shared(config, self.monitor, self.metrics, log, defects, self.policy, IdAllocator())
        self.sessions: set[WsSession] = set()
        self._session_ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._runner: web.AppRunner | None = None
        self.monitor.add_listener(self._after_round)

    # -- health feed ------------------------------------------------------------------------------------

    def _on_check(self, name: str, result: CheckResult) -> None:
        m = self.metrics
        m.checks.labels(name, "ok" if result.error is None else "error").inc()
        m.check_latency.labels(name).observe(result.duration)

    def _on_transition(self, name: str, healthy: bool, error: str | None) -> None:
        self.metrics.transitions.labels(name, "healthy" if healthy else "unhealthy").inc()
        self.log.event(
            "upstream.healthy" if healthy else "upstream.unhealthy",
            "info" if healthy else "warning",
            upstream=name,
            error=error,
        )

    def _after_round(self) -> None:
        m = self.metrics
        for node in self.monitor.nodes:
            m.healthy.labels(node.name).set(1 if node.healthy else 0)
            if node.head is not None:
                m.head.labels(node.name).set(node.head)
            m.lag.labels(node.name).set(node.lag)
            m.failures.labels(node.name).set(node.consecutive_failures)
        if self.monitor.chain_head is not None:
            m.chain_head.set(self.monitor.chain_head)
        for session in list(self.sessions):
            session.evaluate()

    # -- HTTP endpoints ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.body_limit + 1024)
        app.router.add_post("/", self.http.handle)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/status", self._status)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        client = web.WebSocketResponse(
            heartbeat=cfg.ws_ping_interval or None, max_msg_size=cfg.ws_max_message_size, compress=False
        )
        await client.prepare(request)
        session = WsSession(self.shared, client, f"{self._prefix}-{next(self._session_ids)}")
        self.sessions.add(session)
        self.log.info("ws.session_opened", session=session.id, peer=request.remote)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
        return client

    def status(self) -> dict[str, Any]:
        per_upstream = {u.name: 0 for u in self.config.upstreams}
        for session in self.sessions:
            if session.attached is not None:
                per_upstream[session.attached] += 1
        return {
            **self.monitor.status(),
            "defects": sorted(self.defects),
            "sessions": len(self.sessions),
            "sessions_per_upstream": per_upstream,
            "subscriptions": sum(len(s.subs) for s in self.sessions),
            "session_details": [s.status() for s in self.sessions],
        }

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _health(self, _request: web.Request) -> web.Response:
        healthy = [n.name for n in self.monitor.nodes if n.healthy]
        return web.json_response(
            {"status": "ok" if healthy else "no healthy upstream", "healthy_upstreams": healthy},
            status=200 if healthy else 503,
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Check the upstreams once, then listen; returns the bound address."""
        await self.http.start()
        await self.monitor.start()
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=False)
        await site.start()
        bound = self._runner.addresses[0]
        return bound[0], bound[1]

    async def stop(self) -> None:
        for session in list(self.sessions):
            await session.client.close(code=1001, message=b"proxy shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
        await self.monitor.stop()
        await self.http.stop()
