"""Upstream health: a per-node state machine with hysteresis, and the monitor that feeds it.

The monitor checks every node with ``eth_blockNumber`` concurrently, each check under its own deadline,
and never holds anything that routing waits for: routing reads a snapshot of plain attributes. The
``health-without-timeout`` defect puts back the historical monitor: checks one after another, no
deadline, while holding the lock that routing must take.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from rpcproxy.config import ProxyConfig, UpstreamSpec


@dataclass
class CheckResult:
    """One health check: the head it reported, or why it failed."""

    head: int | None
    error: str | None = None
    duration: float = 0.0


@dataclass
class NodeHealth:
    """Health of one node. Unhealthy after ``unhealthy_after`` consecutive failures, healthy again after
    ``healthy_after`` consecutive good checks; a node never seen healthy becomes healthy at its first
    good check (so a fresh proxy serves at once).
    """

    spec: UpstreamSpec
    unhealthy_after: int
    healthy_after: int
    healthy: bool = False
    ever_healthy: bool = False
    head: int | None = None
    lag: int = 0
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_error: str | None = None
    last_check_at: float | None = None
    healthy_since: float | None = None
    checks: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def record(self, ok: bool, now: float, error: str | None = None) -> bool | None:
        """Feed one check outcome; return the new ``healthy`` value if it changed, else None."""
        self.checks += 1
        self.last_check_at = now
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            self.last_error = None
            needed = self.healthy_after if self.ever_healthy else 1
            if not self.healthy and self.consecutive_successes >= needed:
                self.healthy = self.ever_healthy = True
                self.healthy_since = now
                return True
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            self.last_error = error
            if self.healthy and self.consecutive_failures >= self.unhealthy_after:
                self.healthy = False
                self.healthy_since = None
                return False
        return None

    def healthy_for(self, now: float) -> float:
        return now - self.healthy_since if self.healthy and self.healthy_since is not None else -1.0

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.spec.role,
            "priority": self.spec.priority,
            "http": self.spec.http_url,
            "ws": self.spec.ws_url,
            "healthy": self.healthy,
            "head": self.head,
            "lag": self.lag,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "last_error": self.last_error,
            "last_check_at": self.last_check_at,
            "healthy_for": round(max(self.healthy_for(now), 0), 3),
            "checks": self.checks,
        }


def judge_round(
    nodes: list[NodeHealth], results: dict[str, CheckResult], max_lag: int, now: float
) -> tuple[int | None, dict[str, bool]]:
    """Apply one round of results: chain head = highest head seen, lag above *max_lag* is a failure.

    Returns the chain head and the nodes whose ``healthy`` changed (name → new value).
    """
    heads = [r.head for r in results.values() if r.head is not None]
    heads += [n.head for n in nodes if n.head is not None]
    chain_head = max(heads) if heads else None
    changed: dict[str, bool] = {}
    for node in nodes:
        result = results.get(node.name)
        if result is None:
            continue
        error = result.error
        if result.head is not None:
            node.head = result.head
            node.lag = (chain_head - result.head) if chain_head is not None else 0
            if error is None and node.lag > max_lag:
                error = f"lagging {node.lag} blocks behind the chain head {chain_head} (limit {max_lag})"
        transition = node.record(error is None, now, error)
        if transition is not None:
            changed[node.name] = transition
    return chain_head, changed


Listener = Callable[[], None]


@dataclass
class HealthMonitor:
    """Checks every upstream each ``health_interval``; routing reads ``nodes`` without waiting on it."""

    config: ProxyConfig
    defects: frozenset[str]
    on_check: Callable[[str, CheckResult], None] = lambda name, result: None
    on_transition: Callable[[str, bool, str | None], None] = lambda name, healthy, error: None
    nodes: list[NodeHealth] = field(init=False)
    chain_head: int | None = field(init=False, default=None)
    rounds: int = field(init=False, default=0)
    # Taken by routing only under the health-without-timeout defect (the historical shared lock).
    routing_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _listeners: list[Listener] = field(init=False, default_factory=list)
    _session: aiohttp.ClientSession | None = field(init=False, default=None)
    _task: asyncio.Task[None] | None = field(init=False, default=None)
    _round_event: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        cfg = self.config
        self.nodes = [NodeHealth(u, cfg.unhealthy_after, cfg.healthy_after) for u in cfg.upstreams]
        self.by_name = {n.name: n for n in self.nodes}

    @property
    def serialized(self) -> bool:
        return "health-without-timeout" in self.defects

    def add_listener(self, listener: Listener) -> None:
        """*listener* runs (synchronously) after every round."""
        self._listeners.append(listener)

    async def start(self) -> None:
        # The check client has no pool-wide deadline: each check carries its own (or none, under the defect).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=4),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
        )
        await self.run_round()
        self._task = asyncio.create_task(self._loop(), name="health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        interval = self.config.health_interval
        while True:
            started = time.monotonic()
            await self.run_round()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def run_round(self) -> None:
        """One round of checks, then the verdicts, then the listeners (sessions deciding to move)."""
        if self.serialized:
            # Historical monitor: one node after another, no deadline, routing locked out meanwhile.
            async with self.routing_lock:
                results = {}
                for node in self.nodes:
                    results[node.name] = await self._check(node.spec, None)
        else:
            timeout = self.config.check_timeout
            outcomes = await asyncio.gather(*(self._check(n.spec, timeout) for n in self.nodes))
            results = {n.name: r for n, r in zip(self.nodes, outcomes, strict=True)}
        now = time.monotonic()
        for name, result in results.items():
            self.on_check(name, result)
        head, changed = judge_round(self.nodes, results, self.config.max_lag_blocks, now)
        self.chain_head = head
        self.rounds += 1
        for name, healthy in changed.items():
            self.on_transition(name, healthy, self.by_name[name].last_error)
        self._round_event.set()
        self._round_event = asyncio.Event()
        for listener in list(self._listeners):
            listener()

    async def next_round(self, within: float) -> None:
        """Wait (at most *within* seconds) for the next round to complete."""
        event = self._round_event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)

    async def _check(self, spec: UpstreamSpec, deadline: float | None) -> CheckResult:
        assert self._session is not None
        started = time.monotonic()
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        try:
            async with asyncio.timeout(deadline):
                async with self._session.post(spec.http_url, json=body) as resp:
                    payload = await resp.json(content_type=None)
            head = _parse_head(payload)
            return CheckResult(head, None, time.monotonic() - started)
        except TimeoutError:
            return CheckResult(None, f"deadline of {deadline}s exceeded", time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return CheckResult(None, f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - started)

    # -- routing views ----------------------------------------------------------------------------------

    async def routable(self) -> list[NodeHealth]:
        """Healthy nodes in routing order (primaries first). Lock-free unless the defect is on."""
        if self.serialized:
            async with self.routing_lock:
                return [n for n in self.nodes if n.healthy]
        return [n for n in self.nodes if n.healthy]

    def pick(self, exclude: set[str] | frozenset[str] = frozenset()) -> NodeHealth | None:
        """The first healthy node not in *exclude*."""
        for node in self.nodes:
            if node.healthy and node.name not in exclude:
                return node
        return None

    def failback_target(self, current: str) -> NodeHealth | None:
        """A node earlier in the order than *current*, healthy for at least ``failback_after``."""
        now = time.monotonic()
        cur = self.by_name[current]
        for node in self.nodes:
            if node.spec.priority >= cur.spec.priority:
                return None
            if node.healthy and node.healthy_for(now) >= self.config.failback_after:
                return node
        return None

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "chain_head": self.chain_head,
            "rounds": self.rounds,
            "nodes": [n.as_json(now) for n in self.nodes],
        }


def _parse_head(payload: Any) -> int:
    if not isinstance(payload, dict):
        raise ValueError("eth_blockNumber answer is not a JSON object")
    if "error" in payload:
        raise ValueError(f"eth_blockNumber error: {payload['error']}")
    result = payload.get("result")
    if not isinstance(result, str) or not result.startswith("0x"):
        raise ValueError(f"eth_blockNumber result {result!r} is not a hex quantity")
    return int(result, 16)
