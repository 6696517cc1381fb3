"""The RPC proxy topology of the ``rpc-*`` notebooks: two elnodes of one chain and the rpcproxy in front.

``el1`` is the primary, ``el2`` the backup, both started with ``--enable-fault-injection``; the proxy
reaches each through a fault link of the run (``between=("proxy", "el1")``), so a notebook can cut,
delay or blackhole one upstream while every process keeps running. In English::

    stack = await EthStack.start(run, defects=["replay-leak"], settings={"health_interval": 0.2})
    stack.kill("el1"); await stack.restart("el1"); await stack.admin("el2").set(lag_blocks=3)
    await stack.status(); await stack.metrics(); stack.logs()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from elnode.admin import AdminClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from workbook.links import Link
from workbook.run import Run
from workbook.service import Service, http_health
from workbook.waiting import wait_until

NODES = {"el1": "primary", "el2": "backup"}
PROXY = "proxy"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML settings must be finite numbers, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} ({type(value).__name__}) to the proxy's TOML config")


def proxy_config_toml(settings: Mapping[str, Any]) -> str:
    """The proxy's TOML config for *settings*, each key checked against rpcproxy's documented options."""
    from rpcproxy.config import OPTIONS  # the proxy's own table of keys: one source of truth

    unknown = sorted(set(settings) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown proxy settings {unknown}; known: {sorted(OPTIONS)}")
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in settings.items())


def samples(families: Mapping[str, Metric], name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called *name* whose labels include *labels*."""
    found = []
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found.append((dict(sample.labels), sample.value))
    return found


class ProxyObserver:
    """What a notebook or test reads from a running rpcproxy: ``/status``, ``/metrics`` and waits on them.

    Anything with a ``proxy_http_url`` can use it (the stack below, or a proxy in front of other nodes).
    """

    proxy_http_url: str

    async def _get(self, path: str, timeout: float) -> str:  # noqa: ASYNC109
        url = self.proxy_http_url.rstrip("/") + path
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url) as response:
            response.raise_for_status()
            return await response.text()

    async def status(self, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The proxy's ``/status`` JSON."""
        return json.loads(await self._get("/status", timeout))

    async def metrics(self, timeout: float = 5.0) -> dict[str, Metric]:  # noqa: ASYNC109
        """The proxy's ``/metrics``, parsed: family name → prometheus_client Metric (see :func:`samples`)."""
        text = await self._get("/metrics", timeout)
        return {family.name: family for family in text_string_to_metric_families(text)}

    async def sessions(self) -> list[dict[str, Any]]:
        """One row per client WebSocket session of the proxy (``/status`` ``session_details``)."""
        return (await self.status())["session_details"]

    async def node_health(self, name: str) -> dict[str, Any]:
        """The proxy's view of upstream *name*: healthy, head, lag, consecutive failures."""
        return next(n for n in (await self.status())["nodes"] if n["name"] == name)

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of *name* whose labels include *labels*, from the proxy's ``/metrics``."""
        return sum(value for _labels, value in samples(await self.metrics(), name, **labels))

    async def wait_sessions_on(self, upstream: str, count: int = 1, timeout: float = 15.0) -> float:  # noqa: ASYNC109
        """Wait until *count* sessions are attached to *upstream* and none is moving; seconds taken."""

        async def settled() -> bool:
            details = await self.sessions()
            return (sum(1 for s in details if s["upstream"] == upstream) == count
                    and not any(s["moving"] for s in details))

        return await wait_until(settled, timeout, f"{count} session(s) settled on {upstream}")

    async def wait_moving(self, timeout: float = 10.0) -> float:  # noqa: ASYNC109
        """Wait until some session is in the middle of a move."""

        async def moving() -> bool:
            return any(s["moving"] for s in await self.sessions())

        return await wait_until(moving, timeout, "a session is moving")

    async def wait_moves(self, moves: int, timeout: float = 15.0) -> float:  # noqa: ASYNC109
        """Wait until every session has completed *moves* moves (the first attach counts) and settled."""

        async def done() -> bool:
            details = await self.sessions()
            return bool(details) and all(s["moves"] >= moves and not s["moving"] for s in details)

        return await wait_until(done, timeout, f"sessions made {moves} moves")

    async def wait_in_flight(self, count: int, timeout: float = 10.0) -> float:  # noqa: ASYNC109
        """Wait until the sessions hold at least *count* requests in flight upstream (``/status``)."""

        async def held() -> bool:
            return sum(s["in_flight"] for s in await self.sessions()) >= count

        return await wait_until(held, timeout, f"{count} requests in flight upstream")

    async def wait_healthy(self, name: str, healthy: bool = True, timeout: float = 15.0) -> float:  # noqa: ASYNC109
        """Wait until the proxy judges upstream *name* healthy (or, with *healthy* False, unhealthy)."""

        async def judged() -> bool:
            return bool((await self.node_health(name))["healthy"]) is healthy

        return await wait_until(judged, timeout, f"{name} {'healthy' if healthy else 'unhealthy'}")

    async def wait_blocks(self, count: int, timeout: float = 60.0) -> float:  # noqa: ASYNC109
        """Wait until the chain head the proxy sees has advanced *count* blocks from now (time passing
        in blocks, so a step lasts as many blocks in ci as in production)."""
        start = (await self.status())["chain_head"] or 0

        async def advanced() -> bool:
            return ((await self.status())["chain_head"] or 0) >= start + count

        return await wait_until(advanced, timeout, f"{count} more blocks after {start}", poll=0.05)

    async def moves_by_reason(self, outcome: str = "ok") -> dict[str, int]:
        """Completed session moves per reason (initial, unhealthy, upstream_closed, failback): /metrics."""
        rows = samples(await self.metrics(), "rpcproxy_ws_moves_total", outcome=outcome)
        out: dict[str, int] = {}
        for labels, value in rows:
            out[labels["reason"]] = out.get(labels["reason"], 0) + int(value)
        return out

    def watch(self, history: Any = None, period: float = 0.05) -> ProxyWatch:
        """A sampler of the proxy's /status and /metrics every *period* s (see :class:`ProxyWatch`)."""
        return ProxyWatch(self, history, period)


class ProxyWatch:
    """Samples a proxy's ``/status`` and ``/metrics`` in the background: sessions, health and checks per
    upstream over time (history time when a :class:`History` is given, else seconds since start).

        watch = stack.watch(history); watch.start(); ...; await watch.stop()
        watch.frame()          # one row per (sample, upstream)
        watch.health_checks()  # one row per completed health check: upstream, start, end, outcome
    """

    def __init__(self, observer: ProxyObserver, history: Any = None, period: float = 0.05) -> None:
        self.observer = observer
        self.history = history
        self.period = period
        self.rows: list[dict[str, Any]] = []
        self._wall0 = time.time()
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    def _t(self, wall: float) -> float:
        return self.history.at(wall) if self.history is not None else wall - self._wall0

    async def sample(self) -> None:
        """Take one sample now."""
        status, families = await asyncio.gather(self.observer.status(), self.observer.metrics())
        wall = time.time()
        per: dict[str, dict[str, Any]] = {}
        for node in status["nodes"]:
            per[node["name"]] = {"healthy": bool(node["healthy"]),
                                 "consecutive_failures": node.get("consecutive_failures", 0)}
        for name in per:
            row = per[name]
            row["sessions"] = sum(v for _l, v in samples(families, "rpcproxy_ws_sessions", upstream=name))
            row["checks_ok"] = sum(v for _l, v in samples(families, "rpcproxy_health_checks_total",
                                                        upstream=name, outcome="ok"))
            row["checks_error"] = sum(v for _l, v in samples(families, "rpcproxy_health_checks_total",
                                                           upstream=name, outcome="error"))
            row["check_seconds"] = sum(v for _l, v in samples(
                families, "rpcproxy_health_check_duration_seconds_sum", upstream=name))
        moves = sum(v for _l, v in samples(families, "rpcproxy_ws_moves_total", outcome="ok"))
        for name, row in per.items():
            self.rows.append({"t": self._t(wall), "wall": wall, "upstream": name, "rounds": status["rounds"],
                              "moves": moves, **row})

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.errors += 1  # the proxy is busy or gone: a gap in the samples, not a failure
            await asyncio.sleep(self.period)  # the sampling rate, not a synchronisation

    def start(self) -> ProxyWatch:
        """Start sampling in the background (returns self)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="proxy-watch")
        return self

    async def stop(self) -> None:
        """Stop sampling and wait for the sampler to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def frame(self) -> Any:
        """The samples as a DataFrame: t, wall, upstream, sessions, healthy, checks_ok, checks_error, ..."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def health_checks(self) -> list[dict[str, Any]]:
        """Completed health checks per upstream, derived from the counters: a check ended between two
        samples when its counter moved; it took the growth of the check-duration sum (so it started
        that long before the sample). Exact while samples are closer than one health interval."""
        out: list[dict[str, Any]] = []
        last: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            prev = last.get(row["upstream"])
            last[row["upstream"]] = row
            if prev is None:
                continue
            ok = row["checks_ok"] - prev["checks_ok"]
            err = row["checks_error"] - prev["checks_error"]
            done = int(ok + err)
            if done <= 0:
                continue
            seconds = (row["check_seconds"] - prev["check_seconds"]) / done
            for outcome, n in (("ok", ok), ("error", err)):
                for _ in range(int(n)):
                    out.append({"upstream": row["upstream"], "start": row["t"] - seconds, "end": row["t"],
                                "seconds": seconds, "outcome": outcome})
        return out

    def open_checks(self, stale: float) -> list[dict[str, Any]]:
        """Per upstream whose check count has not moved for at least *stale* seconds up to the last
        sample: a check still running (start: the first sample after its last completed check)."""
        out: list[dict[str, Any]] = []
        for name in dict.fromkeys(r["upstream"] for r in self.rows):
            mine = [r for r in self.rows if r["upstream"] == name]
            total = mine[-1]["checks_ok"] + mine[-1]["checks_error"]
            since = next(r for r in mine if r["checks_ok"] + r["checks_error"] == total)
            if mine[-1]["t"] - since["t"] >= stale:
                out.append({"upstream": name, "start": since["t"], "end": mine[-1]["t"],
                            "seconds": mine[-1]["t"] - since["t"], "outcome": "none completed"})
        return out



@dataclass
class ProxyAt(ProxyObserver):
    """A :class:`ProxyObserver` of any proxy, by its HTTP URL (e.g. a second proxy of a stack)."""

    proxy_http_url: str


@dataclass
class EthStack(ProxyObserver):
    """A started stack; the run owns the processes and links and stops them when it closes."""

    run: Run
    nodes: dict[str, Service]
    links: dict[str, Link] = field(default_factory=dict)
    proxy: Service | None = None
    defects: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    chain: dict[str, float] = field(default_factory=dict)

    @classmethod
    async def start(cls, run: Run, *, defects: Iterable[str] = (), settings: Mapping[str, Any] | None = None,
                    block_time: float = 0.5, chain_id: int = 1337, seed: int = 1,
                    genesis_time: float | None = None, with_proxy: bool = True,
                    node_args: Sequence[str] = (), ready_timeout: float = 15.0,
                    via_links: bool = True) -> EthStack:
        """Start el1 and el2 (one chain), the links and, with *with_proxy*, the proxy configured by
        *settings* (rpcproxy's TOML keys) with *defects* (``--defect NAME`` each). Without *via_links*
        the proxy talks to the nodes directly (no link faults; a load test spares the links' CPU)."""
        genesis = math.floor(time.time()) - 1000 if genesis_time is None else genesis_time
        chain = {"chain_id": chain_id, "seed": seed, "genesis_time": genesis, "block_time": block_time}
        stack = cls(run, {}, defects=tuple(defects), settings=dict(settings or {}), chain=chain)
        starts = [run.astart(name, stack._node_argv(name, node_args), health=http_health("/health"),
                             ready_timeout=ready_timeout) for name in NODES]
        for name, svc in zip(NODES, await asyncio.gather(*starts), strict=True):
            stack.nodes[name] = svc
            if via_links:
                stack.links[name] = run.links.add(f"{PROXY}->{name}", target=stack._address_of(name),
                                                  between=(PROXY, name))
        if with_proxy:
            await stack.start_proxy(ready_timeout=ready_timeout)
        return stack

    def _node_argv(self, name: str, extra: Sequence[str]) -> list[str]:
        c = self.chain
        return ["elnode", "--listen", "127.0.0.1:0", "--name", name, "--chain-id", str(c["chain_id"]),
                "--block-time", str(c["block_time"]), "--seed", str(c["seed"]),
                "--genesis-time", str(c["genesis_time"]), "--enable-fault-injection", *extra]

    def _address_of(self, name: str) -> Any:
        return lambda: self.nodes[name].address  # resolved per connection: follows a restart

    async def start_proxy(self, ready_timeout: float = 15.0, *, name: str = PROXY,
                          defects: Iterable[str] | None = None, loop: str | None = None) -> Service:
        """Write the TOML config and start the proxy through the links (also after ``kill("proxy")``).

        Another *name* starts a second proxy in front of the same nodes (with its own *defects*, default
        the stack's), e.g. to measure two side by side; it is returned, ``self.proxy`` stays the first.
        *loop* is the proxy's ``--loop`` (default: its own, uvloop when installed)."""
        config = self.run.path("rpcproxy.toml")
        config.write_text(proxy_config_toml(self.settings))
        argv = ["rpcproxy", "--listen", "127.0.0.1:0", "--name", name, "--config", str(config)]
        for node, role in NODES.items():
            address = self.links[node].address if node in self.links else self.nodes[node].address
            argv += [f"--{role}", f"{node}=http://{address}/"]
        for defect in self.defects if defects is None else defects:
            argv += ["--defect", defect]
        if loop is not None:
            argv += ["--loop", loop]
        svc = await self.run.astart(name, argv, health=http_health("/health"), ready_timeout=ready_timeout)
        if name == PROXY:
            self.proxy = svc
        return svc

    # -- processes ----------------------------------------------------------------------------------------

    def service(self, name: str) -> Service:
        if name == PROXY and self.proxy is not None:
            return self.proxy
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no service {name!r} in the stack; it has {[*self.nodes, PROXY]}") from None

    def kill(self, name: str) -> None:
        """SIGKILL *name* ("el1", "el2" or "proxy")."""
        self.service(name).kill()

    def stop(self, name: str, grace: float = 5.0) -> None:
        """SIGTERM *name*, SIGKILL after *grace* seconds."""
        self.service(name).stop(grace)

    def pause(self, name: str) -> None:
        """SIGSTOP *name*: it hangs, its sockets stay open."""
        self.service(name).pause()

    def resume(self, name: str) -> None:
        self.service(name).resume()

    async def restart(self, name: str) -> Service:
        """Start *name* again on its address (the chain continues where the clock says)."""
        return await self.service(name).arestart()

    # -- endpoints ----------------------------------------------------------------------------------------

    def _proxy(self) -> Service:
        if self.proxy is None:
            raise RuntimeError("the stack was started without the proxy")
        return self.proxy

    @property
    def proxy_ws_url(self) -> str:
        return self._proxy().url("ws")

    @property
    def proxy_http_url(self) -> str:
        return self._proxy().url("http")

    def node_url(self, name: str, kind: str = "http") -> str:
        """A node's own endpoint (``"http"`` or ``"ws"``), bypassing the proxy and the link."""
        return self.nodes[name].url(kind)

    def observer(self, proxy: Service) -> ProxyObserver:
        """``/status``, ``/metrics`` and waits of another proxy (one from ``start_proxy(name=...)``)."""
        return ProxyAt(proxy.url("http"))

    def link(self, name: str) -> Link:
        """The fault link between the proxy and node *name*."""
        return self.links[name]

    def admin(self, name: str) -> AdminClient:
        """The fault knobs of node *name*."""
        return AdminClient(self.node_url(name))

    def upstream_message_rows(self, since: float = 0.0) -> list[dict[str, Any]]:
        """What crossed the proxy ↔ upstream WebSockets after *since* (unix time), from the run's logs.

        Rows for :func:`workbook.plots.sequence_chart`: each request an upstream logged (``rpc.request``
        over ``ws``) becomes a proxy → node arrow at its arrival and a node → proxy answer at its end;
        each completed move of a session (the proxy's ``ws.moved``) becomes a note on the proxy's lane.
        Health checks (HTTP) are left out.
        """
        rows: list[dict[str, Any]] = []
        for name, svc in self.nodes.items():
            for rec in svc.logs():
                if rec.get("event") != "rpc.request" or rec.get("transport") != "ws" or rec["ts"] < since:
                    continue
                arrived = rec["ts"] - rec.get("ms", 0.0) / 1000
                rows.append({"ts": arrived, "src": PROXY, "dst": name, "kind": "upstream-request",
                             "label": f"{rec['method']} id={rec.get('id')!r}", "highlight": False})
                answer = "error" if rec.get("outcome") != "ok" else "result"
                rows.append({"ts": rec["ts"], "src": name, "dst": PROXY, "kind": "upstream-response",
                             "label": f"{answer} id={rec.get('id')!r}", "highlight": False})
        if self.proxy is not None:
            for rec in self.proxy.logs():
                if rec.get("event") == "ws.moved" and rec["ts"] >= since and rec.get("reason") != "initial":
                    rows.append({"ts": rec["ts"], "src": PROXY, "dst": PROXY, "kind": "move",
                                 "label": f"move {rec.get('from_upstream')} → {rec.get('to_upstream')} "
                                          f"({rec.get('reason')})", "highlight": False})
        return rows

    def move_log(self, history: Any = None, *, initial: bool = False) -> list[dict[str, Any]]:
        """Every completed session move from the proxy's log (``ws.moved``): session, reason, from, to,
        and its window (``start`` = when the move began, ``end`` = when the session was attached),
        in history time when *history* is given, else unix time. The first attach only with *initial*."""
        at = history.at if history is not None else (lambda wall: wall)
        rows = []
        for rec in (self.proxy.logs() if self.proxy is not None else []):
            if rec.get("event") != "ws.moved" or (rec.get("reason") == "initial" and not initial):
                continue
            rows.append({"session": rec.get("session"), "reason": rec.get("reason"),
                         "from": rec.get("from_upstream"), "to": rec.get("to_upstream"),
                         "start": at(rec["ts"] - rec.get("seconds", 0.0)), "end": at(rec["ts"]),
                         "queued": rec.get("queued"), "resent": rec.get("resent")})
        return rows

    def logs(self) -> Any:
        """Every process's JSON-lines log as one pandas DataFrame sorted by ``ts``."""
        import pandas as pd

        services = [*self.nodes.values(), *([self.proxy] if self.proxy is not None else [])]
        records = [record for svc in services for record in svc.logs()]
        frame = pd.DataFrame.from_records(records)
        return frame.sort_values("ts", kind="stable").reset_index(drop=True) if len(frame) else frame
