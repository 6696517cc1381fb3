"""The proxy's Prometheus metrics, in a registry owned by the proxy instance (never the global one).

Session and subscription gauges are exact: they move by inc/dec at the state transitions that change
them (a session attaching to or leaving an upstream, a subscription confirmed or removed), so two
sessions updating at once can never overwrite each other's value.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProxyMetrics:
    """Every metric the proxy exposes on ``/metrics``."""

    def __init__(self, upstreams: list[str]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "rpcproxy_"
        self.requests = Counter(
            p + "requests_total",
            "JSON-RPC requests answered, by transport, method, "
            "upstream and outcome (ok, rpc_error, upstream_error, denied, invalid, "
            "limited, retried_ok)",
            ["transport", "method", "upstream", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            p + "request_duration_seconds",
            "time from a request's arrival to its answer leaving the proxy",
            ["transport", "upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            p + "http_retries_total",
            "read-only HTTP requests retried on the next node after a connection error or deadline",
            ["from_upstream"],
            registry=r,
        )
        self.upstream_connections = Counter(
            p + "upstream_http_connections_total",
            "upstream HTTP connections opened",
            ["upstream"],
            registry=r,
        )
        self.healthy = Gauge(p + "upstream_healthy", "1 if the node is healthy", ["upstream"], registry=r)
        self.head = Gauge(p + "upstream_head", "last head the node reported", ["upstream"], registry=r)
        self.lag = Gauge(p + "upstream_lag_blocks", "blocks behind the chain head", ["upstream"], registry=r)
        self.failures = Gauge(
            p + "upstream_consecutive_failures", "consecutive failed checks", ["upstream"], registry=r
        )
        self.chain_head = Gauge(p + "chain_head", "highest head seen on any node", registry=r)
        self.checks = Counter(
            p + "health_checks_total",
            "health checks by outcome (ok, error)",
            ["upstream", "outcome"],
            registry=r,
        )
        self.check_latency = Histogram(
            p + "health_check_duration_seconds",
            "duration of one health check",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transitions = Counter(
            p + "upstream_transitions_total", "health state changes", ["upstream", "to"], registry=r
        )
        self.ws_clients = Gauge(p + "ws_client_connections", "open client WebSocket connections", registry=r)
        self.sessions = Gauge(
            p + "ws_sessions", "client WebSocket sessions attached to each upstream", ["upstream"], registry=r
        )
        self.subscriptions = Gauge(p + "ws_subscriptions", "active client subscriptions", registry=r)
        self.moves = Counter(
            p + "ws_moves_total",
            "session moves between upstreams by reason (initial, "
            "upstream_closed, unhealthy, failback) and outcome (ok, failed)",
            ["reason", "outcome"],
            registry=r,
        )
        self.replayed = Counter(
            p + "ws_replayed_subscriptions_total",
            "subscriptions re-issued on a new upstream, by outcome (ok, error, timeout)",
            ["outcome"],
            registry=r,
        )
        self.queued = Counter(
            p + "ws_queued_messages_total", "client messages queued during a move", registry=r
        )
        self.overflowed = Counter(
            p + "ws_queue_overflow_total",
            "client messages refused (answered with an error) because the move queue was full",
            registry=r,
        )
        self.dropped = Counter(
            p + "ws_dropped_messages_total", "messages dropped, by reason", ["reason"], registry=r
        )
        self.resent = Counter(
            p + "ws_inflight_resent_total", "in-flight reads re-sent after losing their upstream", registry=r
        )
        self.failed_inflight = Counter(
            p + "ws_inflight_failed_total",
            "in-flight requests answered with an error after losing their upstream",
            registry=r,
        )
        self.heads_deduplicated = Counter(
            p + "ws_heads_deduplicated_total",
            "newHeads notifications not delivered because the client already had that block",
            registry=r,
        )
        self.gaps_filled = Counter(
            p + "ws_gap_blocks_filled_total",
            "newHeads blocks filled from eth_getBlockByNumber after a move",
            registry=r,
        )
        self.gaps_unfilled = Counter(
            p + "ws_gap_blocks_unfilled_total", "newHeads blocks that could not be filled", registry=r
        )
        self.unmatched = Counter(
            p + "ws_unmatched_upstream_messages_total",
            "upstream messages matching no request or subscription of the session",
            ["kind"],
            registry=r,
        )
        for name in upstreams:
            self.sessions.labels(name).inc(0)
            self.healthy.labels(name).set(0)
        # Children of the per-request metrics by label values. A child, once made, lives as long as its
        # metric, so a cached one counts into exactly the series ``.labels(...)`` would return.
        self._request_children: dict[tuple[str, str, str, str], Any] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}

    def request(self, transport: str, method: str, upstream: str, outcome: str) -> Any:
        """``requests.labels(...)`` without re-validating the labels on every request."""
        key = (transport, method, upstream, outcome)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        return child

    def request_latency(self, transport: str, upstream: str) -> Any:
        """``latency.labels(...)``, cached like :meth:`request`."""
        key = (transport, upstream)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.latency.labels(*key)
        return child

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
