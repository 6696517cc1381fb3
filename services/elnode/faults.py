"""Fault knobs settable at run time through the admin API: stalls, lag, delays, failures, handshakes.

Every knob is off by default. ``apply`` validates a JSON patch completely before changing anything, so a
bad admin call is rejected with a clear message and leaves the knobs as they were.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

KNOBS = ("stall", "lag_blocks", "delay", "fail", "slow_handshake", "heartbeat_interval")


class FaultError(ValueError):
    """An admin patch that does not describe valid knobs."""


def _number(value: Any, what: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"{what} must be a number, got {value!r}")
    if value < minimum:
        raise FaultError(f"{what} must be >= {minimum}, got {value!r}")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaultError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _method_map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FaultError(f"{what} must be an object keyed by method name or '*', got {value!r}")
    return value


@dataclass
class FailRule:
    """Fail a method with a JSON-RPC error for a fraction of its calls, spread evenly and deterministically.

    Call k (counting from 1) fails when floor(k * fraction) > floor((k - 1) * fraction): fraction 0.5 fails
    every second call, 1.0 every call. No randomness, so a notebook's run is repeatable.
    """

    code: int
    message: str
    fraction: float = 1.0
    calls: int = 0

    def should_fail(self) -> bool:
        self.calls += 1
        return math.floor(self.calls * self.fraction) > math.floor((self.calls - 1) * self.fraction)

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "fraction": self.fraction}


def _fail_rule(value: Any, what: str) -> FailRule:
    if not isinstance(value, dict):
        raise FaultError(f"{what} must be an object {{code, message, fraction}}, got {value!r}")
    unknown = set(value) - {"code", "message", "fraction"}
    if unknown:
        raise FaultError(f"{what} has unknown fields {sorted(unknown)}")
    code = value.get("code", -32000)
    if isinstance(code, bool) or not isinstance(code, int):
        raise FaultError(f"{what}.code must be an integer, got {code!r}")
    message = value.get("message", "injected failure")
    if not isinstance(message, str):
        raise FaultError(f"{what}.message must be a string, got {message!r}")
    fraction = _number(value.get("fraction", 1.0), f"{what}.fraction")
    if fraction > 1:
        raise FaultError(f"{what}.fraction must be in [0, 1], got {fraction!r}")
    return FailRule(code, message, fraction)


@dataclass
class Faults:
    """The current knobs of one node."""

    stall: bool = False
    lag_blocks: int = 0
    delay: dict[str, float] = field(default_factory=dict)
    fail: dict[str, FailRule] = field(default_factory=dict)
    slow_handshake: dict[str, float] | None = None  # {"count": remaining, "seconds": S}
    heartbeat_interval: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "stall": self.stall,
            "lag_blocks": self.lag_blocks,
            "delay": dict(self.delay),
            "fail": {m: r.as_json() for m, r in self.fail.items()},
            "slow_handshake": None if self.slow_handshake is None
            else {"count": int(self.slow_handshake["count"]), "seconds": self.slow_handshake["seconds"]},
            "heartbeat_interval": self.heartbeat_interval,
        }

    def apply(self, patch: Any) -> None:
        """Merge *patch* (the admin JSON) into the knobs, all or nothing.

        Top-level keys replace their knob; ``delay`` and ``fail`` merge per method (an entry set to null
        removes it, the knob set to null clears it); ``slow_handshake`` / ``heartbeat_interval`` null turn
        them off.
        """
        if not isinstance(patch, dict):
            raise FaultError("the body must be a JSON object of knobs")
        unknown = set(patch) - set(KNOBS)
        if unknown:
            raise FaultError(f"unknown knobs {sorted(unknown)}; known: {list(KNOBS)}")
        new = copy.deepcopy(self)
        if "stall" in patch:
            if not isinstance(patch["stall"], bool):
                raise FaultError(f"stall must be true or false, got {patch['stall']!r}")
            new.stall = patch["stall"]
        if "lag_blocks" in patch:
            new.lag_blocks = _integer(patch["lag_blocks"], "lag_blocks")
        if "delay" in patch:
            if patch["delay"] is None:
                new.delay = {}
            else:
                for method, seconds in _method_map(patch["delay"], "delay").items():
                    if seconds is None:
                        new.delay.pop(method, None)
                    else:
                        new.delay[method] = _number(seconds, f"delay[{method!r}]")
        if "fail" in patch:
            if patch["fail"] is None:
                new.fail = {}
            else:
                for method, rule in _method_map(patch["fail"], "fail").items():
                    if rule is None:
                        new.fail.pop(method, None)
                    else:
                        new.fail[method] = _fail_rule(rule, f"fail[{method!r}]")
        if "slow_handshake" in patch:
            value = patch["slow_handshake"]
            if value is None:
                new.slow_handshake = None
            else:
                if not isinstance(value, dict) or set(value) - {"count", "seconds"}:
                    raise FaultError(f"slow_handshake must be {{count, seconds}} or null, got {value!r}")
                count = _integer(value.get("count", 1), "slow_handshake.count")
                seconds = _number(value.get("seconds", 0), "slow_handshake.seconds")
                new.slow_handshake = {"count": count, "seconds": seconds} if count else None
        if "heartbeat_interval" in patch:
            value = patch["heartbeat_interval"]
            new.heartbeat_interval = None if value is None else _number(value, "heartbeat_interval",
                                                                         minimum=0.01)
        self.__dict__.update(new.__dict__)

    def delay_for(self, method: str) -> float:
        return self.delay.get(method, self.delay.get("*", 0.0))

    def failure_for(self, method: str) -> FailRule | None:
        """The failure to inject for this call of *method*, if its rule (or the '*' rule) selects it."""
        rule = self.fail.get(method) or self.fail.get("*")
        return rule if rule is not None and rule.should_fail() else None

    def take_handshake_delay(self) -> float:
        """Seconds to hold this WebSocket upgrade (consumes one of the K slow handshakes)."""
        if not self.slow_handshake:
            return 0.0
        self.slow_handshake["count"] -= 1
        seconds = self.slow_handshake["seconds"]
        if self.slow_handshake["count"] <= 0:
            self.slow_handshake = None
        return seconds
