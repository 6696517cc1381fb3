"""The nemesis: faults as values, seeded schedules, and one object that applies them and records each
in the run's :class:`History` as process ``nemesis`` (its start, and its end under the same key).

    nemesis = Nemesis(history, kv=cluster)            # or eth=stack
    t = nemesis.kill("kv2"); await nemesis.restart("kv2")
    nemesis.partition({"kv1", "kv2"}, {"kv3"}); nemesis.heal()
    schedule = random_schedule(seed=7, kinds=["kill", "pause", "partition"], targets=cluster.names,
                               count=10, hold=(0.3, 1.0), quiet=(0.2, 0.5))
    await nemesis.replay(schedule); schedule.save(run.path("schedule.json"))

A :class:`Schedule` is plain JSON: the same seed gives the same schedule, and ``replay`` of a loaded
schedule applies the same faults in the same order at the same offsets (or as soon after as the
previous fault's undo allows: a restart waits for the node to be ready). What was really applied, with
its times, is :meth:`Nemesis.applied`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from workbook._exceptions import NemesisError
from workbook.history import NEMESIS, History

# kind -> (what it does, how it ends)
KINDS: dict[str, tuple[str, str]] = {
    "kill": ("SIGKILL the process", "restart it on the same address and data directory"),
    "stop": ("SIGTERM the process (graceful)", "restart it"),
    "pause": ("SIGSTOP the process: it hangs with its sockets open", "SIGCONT"),
    "partition": ("cut every link between the target and the others; processes keep running", "heal"),
    "delay": ("delay every link of the target by params.seconds", "heal"),
    "twin": ("start a second process on the node's address and data directory (an impatient operator)",
             "stop the twin"),
    "clock": ("move the node's clock by params.offset seconds (kvstore admin call)", "offset back to 0"),
    "slow": ("elnode answers every method params.delay seconds late", "knobs reset"),
    "fail": ("elnode fails params.methods (fraction params.fraction)", "knobs reset"),
    "lag": ("elnode stops producing blocks (it falls behind)", "knobs reset"),
    "drop-ws": ("elnode closes every WebSocket connection now", "(instant)"),
    "slow-handshake": ("elnode answers its next WebSocket handshake params.delay s late", "knobs reset"),
}


@dataclass(frozen=True)
class Fault:
    """One fault: *kind* on *target*, *at* seconds after the schedule starts, held *hold* seconds."""

    kind: str
    target: str
    at: float = 0.0
    hold: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise NemesisError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.at < 0 or self.hold < 0:
            raise NemesisError(f"fault times must be >= 0, got at={self.at}, hold={self.hold}")


@dataclass(frozen=True)
class Schedule:
    """An ordered list of faults, and the seed that drew it (None for a hand-written one)."""

    faults: tuple[Fault, ...]
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "faults": [asdict(f) for f in self.faults]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Schedule:
        try:
            return cls(tuple(Fault(**f) for f in doc["faults"]), doc.get("seed"))
        except (KeyError, TypeError) as exc:
            raise NemesisError(f"not a schedule: {exc}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w") as out:
            json.dump(self.to_json(), out, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Schedule:
        with open(path) as src:
            return cls.from_json(json.load(src))

    def __len__(self) -> int:
        return len(self.faults)


def random_schedule(seed: int, kinds: Sequence[str], targets: Sequence[str], *, count: int,
                    hold: tuple[float, float], quiet: tuple[float, float],
                    params: dict[str, dict[str, Any]] | None = None) -> Schedule:
    """*count* faults one after another, a pure function of *seed*: every kind once per round in a
    seeded order, a seeded target each, held for a seeded time in *hold*, then *quiet* seconds calm."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    order: list[str] = []
    at = 0.0
    for _ in range(count):
        if not order:
            order = rng.sample(list(kinds), len(kinds))
        kind = order.pop()
        h, q = round(rng.uniform(*hold), 3), round(rng.uniform(*quiet), 3)
        extra = dict((params or {}).get(kind, {}))
        faults.append(Fault(kind, rng.choice(list(targets)), round(at, 3), h, extra))
        at += h + q
    return Schedule(tuple(faults), seed)


class Nemesis:
    """Applies faults to a KV cluster (*kv*) or an Ethereum stack (*eth*) and records them in *history*.

    Instant faults (signals, links) are plain methods and return the history time they took effect;
    those that wait on a service (restart, admin calls) are coroutines."""

    def __init__(self, history: History, *, kv: Any = None, eth: Any = None) -> None:
        if (kv is None) == (eth is None):
            raise NemesisError("give the nemesis one target: kv=cluster or eth=stack")
        self.history = history
        self.kv = kv
        self.eth = eth
        self.target = kv if kv is not None else eth
        self._open: dict[tuple[str, str], str] = {}  # (kind, target) -> key of the fault in force
        self._seq = 0
        self._applied: list[dict[str, Any]] = []

    # -- recording -----------------------------------------------------------------------------------------
    def _begin(self, kind: str, target: str, params: dict[str, Any] | None = None) -> tuple[int, str]:
        self._seq += 1
        key = f"{kind}-{self._seq}"
        op = self.history.invoke(NEMESIS, kind, node=target, key=key, value=dict(params or {}))
        return op, key

    def _started(self, op: int, key: str, kind: str, target: str, params: dict[str, Any] | None,
                 *, lasting: bool = True) -> float:
        done = self.history.complete(op, "ok", dict(params or {}))
        if lasting:
            self._end(kind, target, "replaced")  # a knob set again replaces the fault of that kind in force
            self._open[(kind, target)] = key
        self._applied.append({"fault": key, "kind": kind, "target": target, "params": dict(params or {}),
                              "start": done.time, "end": None if lasting else done.time})
        return done.time

    def _end(self, kind: str, target: str, how: str) -> float | None:
        key = self._open.pop((kind, target), None)
        if key is None:
            return None
        op = self.history.invoke(NEMESIS, how, node=target, key=key, value={"end": True})
        done = self.history.complete(op, "ok", {"end": True})
        for row in self._applied:
            if row["fault"] == key:
                row["end"] = done.time
        return done.time

    def _apply(self, kind: str, target: str, params: dict[str, Any] | None, action: Any,
               *, lasting: bool = True) -> float:
        op, key = self._begin(kind, target, params)
        try:
            action()
        except Exception as exc:
            self.history.complete(op, "info", error=f"{type(exc).__name__}: {exc}")
            raise NemesisError(f"could not {kind} {target}: {exc}") from exc
        return self._started(op, key, kind, target, params, lasting=lasting)

    async def _aapply(self, kind: str, target: str, params: dict[str, Any] | None, action: Any,
                      *, lasting: bool = True) -> float:
        op, key = self._begin(kind, target, params)
        try:
            await action()
        except Exception as exc:
            self.history.complete(op, "info", error=f"{type(exc).__name__}: {exc}")
            raise NemesisError(f"could not {kind} {target}: {exc}") from exc
        return self._started(op, key, kind, target, params, lasting=lasting)

    def applied(self) -> list[dict[str, Any]]:
        """Every fault applied so far: kind, target, params, start and end (history times)."""
        return [dict(r) for r in self._applied]

    def save(self, path: str | os.PathLike[str], schedule: Schedule | None = None) -> None:
        """Write the schedule (if any) and what was applied, with its times, as JSON."""
        doc = {**(schedule.to_json() if schedule is not None else {"seed": None, "faults": []}),
               "applied": self.applied()}
        with open(path, "w") as out:
            json.dump(doc, out, indent=1)

    # -- process faults ------------------------------------------------------------------------------------
    def kill(self, name: str) -> float:
        """``kill -9`` *name* and reap it."""
        return self._apply("kill", name, None, lambda: self.target.kill(name))

    def stop(self, name: str) -> float:
        """SIGTERM *name* (SIGKILL after the grace period) and reap it."""
        return self._apply("stop", name, None, lambda: self.target.stop(name))

    def pause(self, name: str) -> float:
        """SIGSTOP *name*: it hangs with its sockets open."""
        return self._apply("pause", name, None, lambda: self.target.pause(name))

    def resume(self, name: str) -> float | None:
        """SIGCONT *name*; ends its pause."""
        self.target.resume(name)
        return self._end("pause", name, "resume")

    async def restart(self, name: str, *, wait: bool = True) -> float | None:
        """Start *name* again (same address, same data) and, with *wait*, wait until it is ready; ends a
        kill/stop."""
        await (self.target.restart(name) if wait else self.target.restart(name, wait=False))
        ended = self._end("kill", name, "restart")
        stopped = self._end("stop", name, "restart")
        return ended if ended is not None else stopped

    async def twin(self, name: str) -> float:
        """Start a second *name* on its address and data directory (KV: ``cluster.start_twin``); the twin
        is ``run[f"{name}-twin"]``. A twin that refuses to start raises :class:`NemesisError` with its
        error line, recorded as ``info``."""
        if self.kv is None:
            raise NemesisError("a twin needs a KV cluster")
        return await self._aapply("twin", name, {}, lambda: self.kv.start_twin(name))

    def stop_twin(self, name: str) -> float | None:
        """Stop the twin of *name* (if it runs); ends the twin fault."""
        twin = self.kv.run.services.get(f"{name}-twin") if self.kv is not None else None
        if twin is not None and twin.alive:
            twin.stop()
        return self._end("twin", name, "stop-twin")

    # -- network faults ------------------------------------------------------------------------------------
    @property
    def _links(self) -> Any:
        return self.target.run.links

    def partition(self, *groups: Iterable[str]) -> float:
        """Cut every link between the groups; every process keeps running."""
        sets = [set(g) for g in groups]
        name = "|".join(",".join(sorted(g)) for g in sets)
        return self._apply("partition", name, {"groups": [sorted(g) for g in sets]},
                           lambda: self._links.partition(*sets))

    def cut(self, name: str) -> float:
        """Cut *name* off from every peer (a partition of one)."""
        return self._apply("partition", name, {}, lambda: self._links.cut(name))

    def delay(self, name: str, seconds: float) -> float:
        """Delay every link of *name* by *seconds* each way."""
        def act() -> None:
            for link in self._links.of(name):
                link.delay(seconds)
        return self._apply("delay", name, {"seconds": seconds}, act)

    def heal(self) -> float | None:
        """Heal every link; ends every partition and delay in force."""
        self._links.heal()
        ends = [self._end(kind, target, "heal") for kind, target in list(self._open)
                if kind in ("partition", "delay")]
        return max((e for e in ends if e is not None), default=None)

    # -- clock ---------------------------------------------------------------------------------------------
    async def clock(self, name: str, offset: float) -> float:
        """Move *name*'s clock by *offset* seconds (kvstore, ``--enable-fault-injection``)."""
        if self.kv is None:
            raise NemesisError("clock faults need a KV cluster")
        return await self._aapply("clock", name, {"offset": offset},
                                  lambda: self.kv.set_clock_offset(name, offset))

    async def clock_reset(self, name: str) -> float | None:
        await self.kv.set_clock_offset(name, 0.0)
        return self._end("clock", name, "clock-reset")

    # -- elnode knobs --------------------------------------------------------------------------------------
    def _admin(self, name: str) -> Any:
        if self.eth is None:
            raise NemesisError("elnode faults need an Ethereum stack")
        return self.eth.admin(name)

    async def slow(self, name: str, delay: float, methods: Sequence[str] = ("*",)) -> float:
        """*name* answers *methods* (default: every method) *delay* seconds late."""
        knob = {m: delay for m in methods}
        params: dict[str, Any] = {"delay": delay} if list(methods) == ["*"] else {"delay": delay,
                                                                                  "methods": list(methods)}
        return await self._aapply("slow", name, params, lambda: self._admin(name).set(delay=knob))

    async def fail(self, name: str, methods: Sequence[str] = ("*",), fraction: float = 1.0) -> float:
        """*name* fails *methods* (a JSON-RPC error) for the given *fraction* of calls."""
        rule = {m: {"code": -32000, "message": "injected failure", "fraction": fraction}
                for m in methods}
        return await self._aapply("fail", name, {"methods": list(methods), "fraction": fraction},
                                  lambda: self._admin(name).set(fail=rule))

    async def lag(self, name: str) -> float:
        """*name* stops producing blocks: it falls behind the chain."""
        return await self._aapply("lag", name, {}, lambda: self._admin(name).set(stall=True))

    async def slow_handshake(self, name: str, delay: float) -> float:
        """*name* answers its next WebSocket handshake *delay* seconds late."""
        knob = {"count": 1, "seconds": delay}
        return await self._aapply("slow-handshake", name, {"delay": delay},
                                  lambda: self._admin(name).set(slow_handshake=knob))

    async def drop_websockets(self, name: str) -> float:
        """*name* closes every WebSocket connection now (instant: no end)."""
        return await self._aapply("drop-ws", name, {}, lambda: self._admin(name).drop_websockets(),
                                  lasting=False)

    async def calm(self, name: str) -> float | None:
        """Turn every knob of *name* off; ends its slow / fail / lag / slow-handshake faults."""
        await self._admin(name).reset()
        ends = [self._end(kind, name, "calm") for kind in ("slow", "fail", "lag", "slow-handshake")]
        return max((e for e in ends if e is not None), default=None)

    # -- schedules -----------------------------------------------------------------------------------------
    async def start(self, fault: Fault) -> float:
        """Apply *fault* now."""
        p, t = fault.params, fault.target
        if fault.kind in ("kill", "stop", "pause"):
            return getattr(self, fault.kind)(t)
        if fault.kind == "partition":
            return self.partition(*p["groups"]) if p.get("groups") else self.cut(t)
        if fault.kind == "delay":
            return self.delay(t, p.get("seconds", 0.1))
        if fault.kind == "clock":
            return await self.clock(t, p.get("offset", -5.0))
        if fault.kind == "twin":
            return await self.twin(t)
        if fault.kind == "slow":
            return await self.slow(t, p.get("delay", 0.5), p.get("methods", ["*"]))
        if fault.kind == "fail":
            return await self.fail(t, p.get("methods", ["*"]), p.get("fraction", 1.0))
        if fault.kind == "lag":
            return await self.lag(t)
        if fault.kind == "slow-handshake":
            return await self.slow_handshake(t, p.get("delay", 1.0))
        return await self.drop_websockets(t)

    async def end(self, fault: Fault) -> float | None:
        """Undo *fault* (restart, resume, heal, clock back, knobs off)."""
        if fault.kind in ("kill", "stop"):
            return await self.restart(fault.target)
        if fault.kind == "pause":
            return self.resume(fault.target)
        if fault.kind in ("partition", "delay"):
            return self.heal()
        if fault.kind == "clock":
            return await self.clock_reset(fault.target)
        if fault.kind == "twin":
            return self.stop_twin(fault.target)
        if fault.kind == "drop-ws":
            return None
        return await self.calm(fault.target)

    async def replay(self, schedule: Schedule,
                     settle: Callable[[], Awaitable[Any]] | None = None) -> list[dict[str, Any]]:
        """Apply every fault of *schedule* in order at its offset from now (or as soon after as the
        previous undo allows), hold it, undo it. With *settle*, each undo is followed by ``await
        settle()`` (e.g. wait until the system saw the node recover), so faults never overlap in effect;
        the next fault then starts as soon after its offset as that allows. Returns what was applied."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = len(self._applied)
        for fault in schedule.faults:
            wait = t0 + fault.at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the schedule's own timing, not a synchronisation
            await self.start(fault)
            if fault.hold > 0:
                await asyncio.sleep(fault.hold)  # the fault's duration, as scheduled
            await self.end(fault)
            if settle is not None:
                await settle()
        return [dict(r) for r in self._applied[first:]]


__all__ = ["KINDS", "Fault", "Nemesis", "Schedule", "random_schedule"]
