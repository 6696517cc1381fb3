"""Parameter parsing shared by methods and subscriptions: block tags, quantities, log filters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from elnode.rpc import INVALID_PARAMS, RpcError

_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
FINALITY_DEPTH = {"safe": 32, "finalized": 64}


def invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"invalid params: {message}")


def quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise invalid(f"{what} must be a hex quantity like 0x1a, got {value!r}"[:200])
    return int(value, 16)


def block_number(value: Any, head: int) -> int:
    """A block tag or hex number, resolved against *head* (may exceed it: the caller decides)."""
    if value in ("latest", "pending"):
        return head
    if value == "earliest":
        return 0
    if value in FINALITY_DEPTH:
        return max(0, head - FINALITY_DEPTH[value])
    if isinstance(value, dict) and "blockNumber" in value:  # EIP-1898
        value = value["blockNumber"]
    return quantity(value, "block")


def block_hash(value: Any) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise invalid(f"block hash must be 32 bytes of hex, got {value!r}"[:200])
    return value.lower()


def flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"{what} must be true or false, got {value!r}"[:200])
    return value


@dataclass(frozen=True)
class LogFilter:
    """``address`` (any of) and ``topics`` (per position: None = anything, else any of) of a log filter."""

    addresses: frozenset[str] | None
    topics: tuple[frozenset[str] | None, ...]

    def matches(self, log: dict[str, Any]) -> bool:
        if self.addresses is not None and log["address"] not in self.addresses:
            return False
        log_topics = log["topics"]
        if len(self.topics) > len(log_topics):
            return False
        return all(wanted is None or log_topics[i] in wanted for i, wanted in enumerate(self.topics))


def _addresses(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items and isinstance(value, list):
        return None
    for item in items:
        if not isinstance(item, str) or not _ADDRESS.fullmatch(item):
            raise invalid(f"address must be 20 bytes of hex, got {item!r}"[:200])
    return frozenset(item.lower() for item in items)


def _topic_position(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item is None:
            return None  # [null, X] means "anything" in geth
        if not isinstance(item, str) or not _HASH.fullmatch(item):
            raise invalid(f"topic must be 32 bytes of hex, got {item!r}"[:200])
    return frozenset(item.lower() for item in items)


def log_filter(value: Any) -> LogFilter:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise invalid("filter must be an object")
    topics = value.get("topics") or []
    if not isinstance(topics, list) or len(topics) > 4:
        raise invalid("topics must be an array of at most 4 positions")
    return LogFilter(_addresses(value.get("address")), tuple(_topic_position(t) for t in topics))
