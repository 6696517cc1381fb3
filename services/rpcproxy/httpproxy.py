"""JSON-RPC over HTTP (``POST /``): limits, deny-list, routing to the first healthy node, read-only retry.

Upstream connections are pooled, per node, by ``upstream_http.UpstreamPool`` (keep-alive HTTP/1.1). The
``client-per-request`` defect puts back the historical forwarder that opened a new connection for every
request and closed it after the answer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from servicekit import JsonLogger

from rpcproxy import jsonrpc
from rpcproxy.config import ProxyConfig
from rpcproxy.health import HealthMonitor, NodeHealth
from rpcproxy.jsonrpc import encode, error, method_label
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.upstream_http import ResponseTooLarge, UpstreamHttpError, UpstreamPool

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        # recomputed or meaningless on the other hop
        "host",
        "content-length",
        "content-encoding",
        "accept-encoding",
    }
)
RETRYABLE_STATUS = frozenset({502, 503, 504})
RESPONSE_DROP = frozenset({"date", "server"})  # the proxy's own server sets these


class UpstreamFailed(Exception):
    """No upstream produced an answer (``code``: the JSON-RPC error the client gets)."""

    def __init__(self, message: str, code: int = jsonrpc.UPSTREAM_UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


Headers = list[tuple[str, str]]


def forwardable(headers: Any, extra_drop: frozenset[str] = frozenset()) -> Headers:
    """*headers* (a multidict or a list of pairs) without hop-by-hop ones, nor those named in a
    ``Connection`` header."""
    pairs: Headers = list(headers.items() if hasattr(headers, "items") else headers)
    drop = HOP_BY_HOP | extra_drop if extra_drop else HOP_BY_HOP
    named = [v for k, v in pairs if k.lower() == "connection"]
    if named:
        drop = drop | {t.strip().lower() for v in named for t in v.split(",")}
    return [(k, v) for k, v in pairs if k.lower() not in drop]


def _failure_outcome(exc: UpstreamFailed) -> str:
    return "limited" if exc.code == jsonrpc.LIMIT_EXCEEDED else "upstream_error"


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode(payload).encode(), status=status, content_type="application/json")


class HttpForwarder:
    """Handles ``POST /``."""

    def __init__(
        self,
        config: ProxyConfig,
        monitor: HealthMonitor,
        metrics: ProxyMetrics,
        log: JsonLogger,
        defects: frozenset[str],
        policy: jsonrpc.MethodPolicy,
    ) -> None:
        self.cfg = config
        self.monitor = monitor
        self.metrics = metrics
        self.log = log
        self.per_request = "client-per-request" in defects
        self.policy = policy
        self._pools: dict[str, UpstreamPool] = {}

    async def start(self) -> None:
        for spec in self.cfg.upstreams:
            opened = self.metrics.upstream_connections.labels(spec.name)
            self._pools[spec.name] = UpstreamPool(
                spec.http_url,
                limit=self.cfg.pool_size,
                keepalive=30.0,
                on_open=opened.inc,
                max_body=self.cfg.response_limit,
            )

    async def stop(self) -> None:
        for pool in self._pools.values():
            await pool.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body = await self._read_body(request)
        if body is None:
            self.metrics.request("http", "other", "", "limited").inc()
            return _json(
                error(
                    None,
                    jsonrpc.LIMIT_EXCEEDED,
                    f"request body exceeds the limit of {self.cfg.body_limit} bytes",
                ),
                413,
            )
        obj, problem = jsonrpc.decode(body)
        if problem is not None:
            self.metrics.request("http", "other", "", "invalid").inc()
            return _json(error(None, jsonrpc.PARSE_ERROR, problem))
        if isinstance(obj, list):
            return await self._batch(request, body, obj, started)
        return await self._single(request, body, obj, started)

    async def _read_body(self, request: web.Request) -> bytes | None:
        limit = self.cfg.body_limit
        if request.content_length is not None:
            return None if request.content_length > limit else await request.read()
        data = bytearray()
        async for chunk in request.content.iter_any():
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)

    async def _single(
        self, request: web.Request, body: bytes, obj: Any, started: float
    ) -> web.StreamResponse:
        m = self.metrics
        problem = jsonrpc.request_problem(obj)
        if problem is not None:
            m.request("http", "other", "", "invalid").inc()
            return _json(error(jsonrpc.id_of(obj), jsonrpc.INVALID_REQUEST, problem))
        method = obj["method"]
        label = method_label(method)
        if self.policy.denied(method):
            m.request("http", label, "", "denied").inc()
            return _json(self.policy.deny_error(obj.get("id"), method))
        try:
            status, headers, payload, upstream = await self.forward(
                request, body, self.policy.is_read_only(method)
            )
        except UpstreamFailed as exc:
            m.request("http", label, "", _failure_outcome(exc)).inc()
            return _json(error(obj.get("id"), exc.code, str(exc)), 502)
        outcome = "rpc_error" if b'"error"' in payload else "ok"
        m.request("http", label, upstream, outcome).inc()
        m.request_latency("http", upstream).observe(time.monotonic() - started)
        return web.Response(body=payload, status=status, headers=headers)

    async def _batch(
        self, request: web.Request, body: bytes, items: list[Any], started: float
    ) -> web.StreamResponse:
        m = self.metrics
        if not items:
            m.request("http", "batch", "", "invalid").inc()
            return _json(error(None, jsonrpc.INVALID_REQUEST, "invalid request: empty batch"))
        if len(items) > self.cfg.batch_limit:
            m.request("http", "batch", "", "limited").inc()
            return _json(
                error(
                    None,
                    jsonrpc.LIMIT_EXCEEDED,
                    f"batch of {len(items)} exceeds the limit of {self.cfg.batch_limit}",
                )
            )
        local: list[dict[str, Any]] = []
        remote: list[Any] = []
        for item in items:
            problem = jsonrpc.request_problem(item)
            if problem is not None:
                local.append(error(jsonrpc.id_of(item), jsonrpc.INVALID_REQUEST, problem))
            elif self.policy.denied(item["method"]):
                if "id" in item:
                    local.append(self.policy.deny_error(item["id"], item["method"]))
            else:
                remote.append(item)
        if not remote:
            m.request("http", "batch", "", "denied").inc()
            return _json(local) if local else web.Response(status=204)
        read_only = all(self.policy.is_read_only(i["method"]) for i in remote)
        upstream_body = body if not local and len(remote) == len(items) else encode(remote).encode()
        try:
            status, headers, payload, upstream = await self.forward(request, upstream_body, read_only)
        except UpstreamFailed as exc:
            m.request("http", "batch", "", _failure_outcome(exc)).inc()
            answers = local + [error(i.get("id"), exc.code, str(exc)) for i in remote if "id" in i]
            return _json(answers, 502)
        m.request("http", "batch", upstream, "ok").inc()
        m.request_latency("http", upstream).observe(time.monotonic() - started)
        if not local:
            return web.Response(body=payload, status=status, headers=headers)
        upstream_answers, problem = jsonrpc.decode(payload)
        if problem is not None or not isinstance(upstream_answers, list):
            upstream_answers = [
                error(
                    i.get("id"),
                    jsonrpc.INTERNAL_ERROR,
                    "upstream answered a batch with something other than an array",
                )
                for i in remote
                if "id" in i
            ]
        return _json(local + upstream_answers)

    async def forward(
        self, request: web.Request, body: bytes, read_only: bool
    ) -> tuple[int, Headers, bytes, str]:
        """Send *body* to the first healthy node; on a connection error or deadline, reads go to the next."""
        nodes = await self.monitor.routable()
        if not nodes:
            raise UpstreamFailed("no healthy upstream")
        headers = forwardable(request.headers)
        present = {k.lower() for k, _ in headers}
        if "content-type" not in present:
            headers.append(("Content-Type", "application/json"))
        if "accept" not in present:
            headers.append(("Accept", "*/*"))
        last_error = ""
        for index, node in enumerate(nodes):
            more = index + 1 < len(nodes)
            try:
                status, resp_headers, payload = await self._post(node, headers, body)
            except ResponseTooLarge as exc:  # another node would answer the same: not retried
                self.log.warning("http.response_too_large", upstream=node.name, error=str(exc))
                raise UpstreamFailed(f"upstream {node.name}: {exc}", jsonrpc.LIMIT_EXCEEDED) from None
            except (UpstreamHttpError, TimeoutError, OSError) as exc:
                last_error = f"{node.name}: {type(exc).__name__}: {exc}"[:300]
                if read_only and more:
                    self.metrics.retries.labels(node.name).inc()
                    self.log.warning("http.retry", upstream=node.name, error=last_error)
                    continue
                raise UpstreamFailed(f"upstream {last_error}") from None
            if status in RETRYABLE_STATUS and read_only and more:
                self.metrics.retries.labels(node.name).inc()
                continue
            return status, resp_headers, payload, node.name
        raise UpstreamFailed(f"upstream {last_error}")

    async def _post(self, node: NodeHealth, headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
        pool = self._pools[node.name]
        async with asyncio.timeout(self.cfg.request_timeout):
            if self.per_request:
                # Historical: a fresh TCP connection for every request, closed right after.
                reply = await pool.post_fresh(headers, body)
            else:
                reply = await pool.post(headers, body)
        return reply.status, forwardable(reply.headers, RESPONSE_DROP), reply.body
