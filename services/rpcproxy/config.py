"""The proxy's configuration: upstreams from the command line, everything else from a TOML file.

Every TOML key, its default and its meaning is listed in ``OPTIONS``; ``rpcproxy --help`` prints
that table, so the documentation and the validation can never disagree. A bad value is reported as one
``ConfigError`` line naming the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class ConfigError(ValueError):
    """A configuration mistake, described in one line."""


# name: (type, default, minimum, description). ``minimum`` applies to numbers; None = no bound.
OPTIONS: dict[str, tuple[type, Any, float | None, str]] = {
    "health_interval": (float, 1.0, 0.01, "seconds between two rounds of health checks"),
    "check_timeout": (float, 0.5, 0.001, "deadline of one eth_blockNumber health check, seconds"),
    "unhealthy_after": (int, 3, 1, "consecutive failed checks before a node is marked unhealthy"),
    "healthy_after": (int, 2, 1, "consecutive good checks before an unhealthy node is healthy again"),
    "max_lag_blocks": (int, 5, 0, "a check whose head is more than this behind the chain head fails"),
    "failback_after": (
        float,
        1.0,
        0.0,
        "seconds a better (earlier-listed) node must have been healthy before sessions move back to it",
    ),
    "request_timeout": (
        float,
        10.0,
        0.001,
        "deadline of one upstream HTTP request; read-only methods then go to the next node",
    ),
    "batch_limit": (int, 100, 1, "largest accepted batch (HTTP and WebSocket)"),
    "body_limit": (int, 262144, 64, "largest accepted HTTP request body in bytes (over it: HTTP 413)"),
    "deny_prefixes": (
        list,
        ["admin_", "debug_", "personal_", "miner_", "engine_"],
        None,
        "method name prefixes the proxy refuses (-32601)",
    ),
    "extra_read_only_methods": (
        list,
        [],
        None,
        "methods to treat as read-only (retried / re-sent) on top of the built-in set",
    ),
    "pool_size": (int, 64, 1, "pooled HTTP connections per upstream"),
    "response_limit": (
        int,
        67108864,
        1024,
        "largest upstream HTTP response body in bytes (over it: a -32005 error, the connection closed)",
    ),
    "ws_max_message_size": (
        int,
        1048576,
        128,
        "largest WebSocket message in bytes, client and upstream side",
    ),
    "ws_ping_interval": (
        float,
        20.0,
        0.0,
        "WebSocket keep-alive ping interval (client and upstream side), 0 disables",
    ),
    "ws_connect_timeout": (float, 5.0, 0.001, "deadline to open and handshake an upstream WebSocket"),
    "ws_resubscribe_timeout": (float, 5.0, 0.001, "deadline for the re-subscriptions of a move"),
    "ws_drain_timeout": (
        float,
        5.0,
        0.0,
        "after a make-before-break move, how long the old upstream may finish its "
        "in-flight requests before it is closed (leftover reads are re-sent)",
    ),
    "ws_move_timeout": (
        float,
        10.0,
        0.001,
        "how long queued client messages may wait for an upstream during a move before "
        "they are answered with an error",
    ),
    "ws_queue_max_messages": (int, 1000, 1, "client messages a session queues during a move"),
    "ws_queue_max_bytes": (int, 1048576, 1, "bytes of client messages a session queues during a move"),
    "ws_send_queue_max_bytes": (
        int,
        8388608,
        1024,
        "bytes waiting to be written to one client; a client that falls further behind is closed (1008)",
    ),
    "ws_max_subscriptions": (int, 100, 1, "subscriptions one session may hold"),
    "ws_max_inflight": (int, 1000, 1, "requests one session may have in flight upstream"),
    "gap_fill_max": (int, 64, 0, "most newHeads blocks filled from eth_getBlockByNumber after a move"),
}


def options_help() -> str:
    """The TOML keys, their defaults and meanings, for ``--help``."""
    lines = ["config file keys (TOML, top level; all optional):"]
    for name, (_kind, default, minimum, text) in OPTIONS.items():
        bound = f", >= {minimum:g}" if minimum is not None else ""
        lines.append(f"  {name} = {default!r}{bound}\n      {text}")
    return "\n".join(lines)


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class UpstreamSpec:
    """One execution node: its name, role, HTTP URL, WebSocket URL and place in the routing order."""

    name: str
    role: str  # "primary" | "backup"
    http_url: str
    ws_url: str
    priority: int


def _check_url(url: str, schemes: tuple[str, ...], what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{what}: {url!r} is not a {'/'.join(schemes)} URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{what}: {url!r} has a bad port") from None
    return url


def derive_ws_url(http_url: str) -> str:
    """ws(s)://same-host/same-path for an http(s) URL."""
    parts = urlsplit(http_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def parse_upstream(text: str, role: str, priority: int) -> UpstreamSpec:
    """Parse ``NAME=HTTP_URL`` or ``NAME=HTTP_URL,ws=WS_URL``."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise ConfigError(f"--{role} {text!r}: expected NAME=URL[,ws=WSURL]")
    if not _NAME.match(name):
        raise ConfigError(f"--{role} {text!r}: name must be 1-64 of A-Z a-z 0-9 _ . -")
    http_url, _, ws_part = rest.partition(",ws=")
    _check_url(http_url, ("http", "https"), f"--{role} {name}")
    ws_url = _check_url(ws_part, ("ws", "wss"), f"--{role} {name} ws") if ws_part else derive_ws_url(http_url)
    return UpstreamSpec(name, role, http_url, ws_url, priority)


@dataclass
class ProxyConfig:
    """Every tunable of the proxy (see ``OPTIONS``) plus the ordered upstreams."""

    upstreams: list[UpstreamSpec] = field(default_factory=list)
    health_interval: float = 1.0
    check_timeout: float = 0.5
    unhealthy_after: int = 3
    healthy_after: int = 2
    max_lag_blocks: int = 5
    failback_after: float = 1.0
    request_timeout: float = 10.0
    batch_limit: int = 100
    body_limit: int = 262144
    deny_prefixes: list[str] = field(default_factory=lambda: list(OPTIONS["deny_prefixes"][1]))
    extra_read_only_methods: list[str] = field(default_factory=list)
    pool_size: int = 64
    response_limit: int = 67108864
    ws_max_message_size: int = 1048576
    ws_ping_interval: float = 20.0
    ws_connect_timeout: float = 5.0
    ws_resubscribe_timeout: float = 5.0
    ws_drain_timeout: float = 5.0
    ws_move_timeout: float = 10.0
    ws_queue_max_messages: int = 1000
    ws_queue_max_bytes: int = 1048576
    ws_send_queue_max_bytes: int = 8388608
    ws_max_subscriptions: int = 100
    ws_max_inflight: int = 1000
    gap_fill_max: int = 64

    def apply(self, table: dict[str, Any], source: str = "config") -> None:
        """Validate and set the keys of *table*; unknown keys and bad values raise ``ConfigError``."""
        known = {f.name for f in fields(self)} - {"upstreams"}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key {key!r} (see rpcproxy --help)")
            setattr(self, key, _coerce(key, value, source))

    def validate_upstreams(self) -> None:
        """At least one primary; names unique."""
        if not any(u.role == "primary" for u in self.upstreams):
            raise ConfigError("at least one --primary NAME=URL is required")
        seen: set[str] = set()
        for up in self.upstreams:
            if up.name in seen:
                raise ConfigError(f"duplicate upstream name {up.name!r}")
            seen.add(up.name)


def _coerce(key: str, value: Any, source: str) -> Any:
    kind, _default, minimum, _text = OPTIONS[key]
    where = f"{source}: {key}"
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where} must be a list of non-empty strings, got {value!r}")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where} must be >= {minimum:g}, got {value!r}")
    return kind(value)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax errors into one ``ConfigError`` line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def build_config(
    primaries: list[str],
    backups: list[str],
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> ProxyConfig:
    """The validated configuration of a proxy (what ``rpcproxy``'s command line describes)."""
    cfg = ProxyConfig()
    if config_file:
        cfg.apply(load_toml(config_file), f"config file {config_file}")
    if overrides:
        cfg.apply(overrides, "overrides")
    specs = [parse_upstream(t, "primary", i) for i, t in enumerate(primaries)]
    specs += [parse_upstream(t, "backup", len(specs) + i) for i, t in enumerate(backups)]
    cfg.upstreams = specs
    cfg.validate_upstreams()
    return cfg
