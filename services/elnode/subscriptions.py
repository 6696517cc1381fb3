"""Subscriptions of one WebSocket session: what each kind sends when a new head appears."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from elnode import filters
from elnode.filters import LogFilter
from elnode.node import Node

KINDS = ("newHeads", "logs", "newPendingTransactions", "syncing")


def new_subscription_id() -> str:
    """A random 16-byte hex id, as geth hands out."""
    return "0x" + secrets.token_hex(16)


@dataclass
class Subscription:
    """One ``eth_subscribe``: its kind and the arguments that shape its notifications."""

    id: str
    kind: str
    log_filter: LogFilter | None = None
    full_transactions: bool = False
    last_syncing: Any = field(default=False)

    def results_for_block(self, node: Node, number: int) -> list[Any]:
        """The notification results this subscription sends when block *number* becomes the head."""
        chain = node.chain
        if self.kind == "newHeads":
            return [chain.header(number)]
        if self.kind == "logs":
            assert self.log_filter is not None
            return [dict(log) for log in chain.logs(number) if self.log_filter.matches(log)]
        if self.kind == "newPendingTransactions":  # the next block's transactions, seen while pending
            pending = chain.block(number + 1)["transactions"]
            if self.full_transactions:
                return [{**tx, "blockHash": None, "blockNumber": None, "transactionIndex": None}
                        for tx in pending]
            return [tx["hash"] for tx in pending]
        return []

    def syncing_change(self, node: Node) -> list[Any]:
        """geth's ``syncing`` notification, sent only when the node's syncing status changes."""
        status = node.syncing()
        changed = bool(status) != bool(self.last_syncing)
        self.last_syncing = status
        if not changed:
            return []
        return [{"syncing": True, "status": status} if status else False]


def parse_subscribe(params: list[Any] | dict[str, Any], node: Node) -> Subscription:
    """Validate ``eth_subscribe`` params into a subscription with a fresh id (-32602 if invalid)."""
    if not isinstance(params, list) or not params:
        raise filters.invalid("expected [kind, ...options]")
    kind = params[0]
    if kind not in KINDS:
        raise filters.invalid(f"no {str(kind)[:64]!r} subscription in eth namespace; known: {list(KINDS)}")
    sub = Subscription(new_subscription_id(), kind)
    rest = params[1:]
    if kind == "logs":
        if len(rest) > 1:
            raise filters.invalid("logs takes one filter object")
        sub.log_filter = filters.log_filter(rest[0] if rest else None)
    elif kind == "newPendingTransactions":
        if len(rest) > 1:
            raise filters.invalid("newPendingTransactions takes one optional boolean")
        sub.full_transactions = filters.flag(rest[0], "full transactions flag") if rest else False
    elif rest:
        raise filters.invalid(f"{kind} takes no options")
    if kind == "syncing":
        sub.last_syncing = node.syncing()
    return sub
