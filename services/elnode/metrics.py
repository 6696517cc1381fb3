"""Prometheus metrics of one node, in a registry owned by the instance (never the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from elnode.methods import METHODS, SUBSCRIPTION_METHODS

KNOWN_METHODS = frozenset(METHODS) | frozenset(SUBSCRIPTION_METHODS)


class Metrics:
    """Requests, latency, connections, subscriptions, notifications, head and injected faults."""

    def __init__(self, name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"registry": self.registry}
        self.requests = Counter("elnode_requests", "JSON-RPC requests answered",
                                ["transport", "method", "outcome"], **labels)
        self.latency = Histogram("elnode_request_seconds", "time to answer one JSON-RPC request",
                                 ["transport"], buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25,
                                                         .5, 1, 2.5, 5, 10), **labels)
        self.ws_connections = Gauge("elnode_ws_connections", "open WebSocket connections", **labels)
        self.ws_accepted = Counter("elnode_ws_accepted", "WebSocket connections accepted", **labels)
        self.subscriptions = Gauge("elnode_subscriptions", "active subscriptions", ["kind"], **labels)
        self.notifications = Counter("elnode_notifications", "subscription notifications sent", ["kind"],
                                     **labels)
        self.head = Gauge("elnode_head_block", "head block number this node reports", **labels)
        self.faults = Counter("elnode_faults_injected", "faults injected", ["kind"], **labels)
        info = Gauge("elnode_info", "constant 1, labelled with the node's name", ["name"], **labels)
        info.labels(name=name).set(1)

    def method_label(self, method: str) -> str:
        """Known method names only: arbitrary client input must not create unbounded label sets."""
        return method if method in KNOWN_METHODS else "other"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
