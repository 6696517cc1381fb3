"""JSON-RPC over HTTP (``POST /``): limits, deny-list, routing to the first healthy node, read-only retry.

Upstream connections are pooled in one ``aiohttp.ClientSession``. The ``client-per-request`` defect puts
back the historical forwarder that opened a new session and connection (``force_close``) per request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from servicekit import JsonLogger

from rpcproxy import jsonrpc
from rpcproxy.config import ProxyConfig
from rpcproxy.health import HealthMonitor, NodeHealth
from rpcproxy.jsonrpc import encode, error, method_label
from rpcproxy.metrics import ProxyMetrics

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


class UpstreamFailed(Exception):
    """No upstream produced an answer."""


class CountingConnector(aiohttp.TCPConnector):
    """A connector that counts the TCP connections it opens, per upstream (cheaper than request tracing)."""

    def __init__(self, on_open: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_open = on_open

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109 (aiohttp's)
        connection = await super()._create_connection(req, traces, timeout)
        self._on_open(req.url)
        return connection


def forwardable(headers: Any, extra_drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """*headers* without hop-by-hop ones, nor those named in a ``Connection`` header."""
    named = {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",")}
    drop = HOP_BY_HOP | named | extra_drop
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


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
        self._session: aiohttp.ClientSession | None = None
        self._names = {
            (urlsplit(u.http_url).hostname, urlsplit(u.http_url).port): u.name for u in config.upstreams
        }

    def _connection_opened(self, url: Any) -> None:
        self.metrics.upstream_connections.labels(self._names.get((url.host, url.port), "")).inc()

    async def start(self) -> None:
        self._session = self._new_session(pooled=True)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _new_session(self, *, pooled: bool) -> aiohttp.ClientSession:
        connector = (
            CountingConnector(
                self._connection_opened, limit=0, limit_per_host=self.cfg.pool_size, keepalive_timeout=30
            )
            if pooled
            else CountingConnector(self._connection_opened, force_close=True, limit=0)
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        )

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
            m.request("http", label, "", "upstream_error").inc()
            return _json(error(obj.get("id"), jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)), 502)
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
            m.request("http", "batch", "", "upstream_error").inc()
            answers = local + [
                error(i.get("id"), jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) for i in remote if "id" in i
            ]
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
    ) -> tuple[int, CIMultiDict[str], bytes, str]:
        """Send *body* to the first healthy node; on a connection error or deadline, reads go to the next."""
        nodes = await self.monitor.routable()
        if not nodes:
            raise UpstreamFailed("no healthy upstream")
        headers = forwardable(request.headers)
        last_error = ""
        for index, node in enumerate(nodes):
            more = index + 1 < len(nodes)
            try:
                status, resp_headers, payload = await self._post(node, headers, body)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
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

    async def _post(
        self, node: NodeHealth, headers: CIMultiDict[str], body: bytes
    ) -> tuple[int, CIMultiDict[str], bytes]:
        async with asyncio.timeout(self.cfg.request_timeout):
            if self.per_request:
                # Historical: a fresh client (and TCP connection) for every request, closed right after.
                async with self._new_session(pooled=False) as session:
                    return await self._exchange(session, node, headers, body)
            assert self._session is not None
            return await self._exchange(self._session, node, headers, body)

    @staticmethod
    async def _exchange(
        session: aiohttp.ClientSession, node: NodeHealth, headers: CIMultiDict[str], body: bytes
    ) -> tuple[int, CIMultiDict[str], bytes]:
        if "Content-Type" not in headers:
            headers = CIMultiDict(headers)
            headers["Content-Type"] = "application/json"
        async with session.post(node.spec.http_url, data=body, headers=headers) as resp:
            payload = await resp.read()
            return resp.status, forwardable(resp.headers, frozenset({"date", "server"})), payload
