"""The bookkeeping of one WebSocket session, free of I/O so it can be unit-tested:

- ``PendingTable``: requests in flight upstream under proxy-unique ids, each remembering the client's id,
  the link it went out on, and the original request (to re-send it after losing that link);
- ``SubscriptionTable``: the client's subscriptions with their parameters, and for each upstream link the
  mapping between that link's subscription ids and the ids the client holds (which never change);
- ``HeadTracker``: which newHeads blocks a subscription has delivered, to drop duplicates and find gaps.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

PROXY_ID_PREFIX = "rpcproxy:"


class IdAllocator:
    """Proxy-unique upstream request ids. Strings, so they cannot collide with a client's numeric ids."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{PROXY_ID_PREFIX}{next(self._counter)}"


@dataclass
class Subscription:
    """One client subscription: the id the client holds, what it asked for, and delivery state."""

    client_id: str
    params: list[Any]
    request_id: Any  # id of the client's original eth_subscribe (the replay-leak defect reuses it)
    heads: HeadTracker | None = None

    @property
    def kind(self) -> str:
        return str(self.params[0]) if self.params else ""


@dataclass
class Pending:
    """A request in flight upstream."""

    proxy_id: str
    client_id: Any
    method: str
    request: dict[str, Any] | None  # the client's request as received (None for the proxy's own)
    kind: str  # "call" | "subscribe" | "unsubscribe" | "replay" | "internal"
    link: Hashable
    started: float
    batch: Any = None
    waiter: Callable[[Any], None] | None = None  # an internal call's continuation (gets the result)
    sub: Subscription | None = None


class PendingTable:
    """Requests in flight by proxy id, in the order they were sent."""

    def __init__(self, ids: IdAllocator) -> None:
        self._ids = ids
        self._by_id: dict[str, Pending] = {}

    def add(
        self,
        *,
        client_id: Any,
        method: str,
        request: dict[str, Any] | None,
        kind: str,
        link: Hashable,
        started: float,
        **extra: Any,
    ) -> Pending:
        pending = Pending(self._ids.next(), client_id, method, request, kind, link, started, **extra)
        self._by_id[pending.proxy_id] = pending
        return pending

    def pop(self, proxy_id: Any) -> Pending | None:
        return self._by_id.pop(proxy_id, None) if isinstance(proxy_id, str) else None

    def on_link(self, link: Hashable) -> list[Pending]:
        return [p for p in self._by_id.values() if p.link is link]

    def take_link(self, link: Hashable) -> list[Pending]:
        """Remove and return (in send order) every request in flight on *link*."""
        taken = self.on_link(link)
        for p in taken:
            del self._by_id[p.proxy_id]
        return taken

    def count(self, kinds: tuple[str, ...]) -> int:
        return sum(1 for p in self._by_id.values() if p.kind in kinds)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self._by_id.values()))


class SubscriptionTable:
    """Client subscriptions, and per upstream link: link's subscription id ↔ client's subscription id."""

    def __init__(self) -> None:
        self.subs: dict[str, Subscription] = {}
        self._to_client: dict[Hashable, dict[str, str]] = {}
        self._to_upstream: dict[Hashable, dict[str, str]] = {}

    def __len__(self) -> int:
        return len(self.subs)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self.subs

    def add(self, link: Hashable, upstream_id: str, params: list[Any], request_id: Any) -> Subscription:
        """A confirmed subscription: the client keeps the first upstream id as its own id forever (or,
        should an upstream hand out an id the client already holds, a fresh proxy-made one)."""
        client_id = upstream_id
        while client_id in self.subs:
            client_id = "0x" + secrets.token_hex(16)
        sub = Subscription(client_id, list(params), request_id)
        if sub.kind == "newHeads":
            sub.heads = HeadTracker()
        self.subs[client_id] = sub
        self.bind(link, upstream_id, client_id)
        return sub

    def bind(self, link: Hashable, upstream_id: str, client_id: str) -> None:
        """After a re-subscribe on *link*: notifications under *upstream_id* belong to *client_id*."""
        self._to_client.setdefault(link, {})[upstream_id] = client_id
        self._to_upstream.setdefault(link, {})[client_id] = upstream_id

    def client_id(self, link: Hashable, upstream_id: Any) -> str | None:
        return self._to_client.get(link, {}).get(upstream_id) if isinstance(upstream_id, str) else None

    def upstream_id(self, link: Hashable, client_id: Any) -> str | None:
        return self._to_upstream.get(link, {}).get(client_id) if isinstance(client_id, str) else None

    def remove(self, client_id: str) -> Subscription | None:
        sub = self.subs.pop(client_id, None)
        for link, mapping in self._to_upstream.items():
            upstream = mapping.pop(client_id, None)
            if upstream is not None:
                self._to_client[link].pop(upstream, None)
        return sub

    def forget_link(self, link: Hashable) -> None:
        self._to_client.pop(link, None)
        self._to_upstream.pop(link, None)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self.subs.values()))


@dataclass
class HeadTracker:
    """Delivered newHeads of one subscription: the highest number and the recent hashes.

    A block whose hash was already delivered is a duplicate (a move replays heads the client has);
    a block more than one above the highest delivered leaves a gap to fill first. A different hash at a
    height already delivered is a reorg and is delivered.
    """

    highest: int | None = None
    recent: deque[str] = field(default_factory=deque)  # the last RECENT hashes, oldest first
    seen: set[str] = field(default_factory=set)  # the same hashes, for an O(1) lookup per head

    RECENT: ClassVar[int] = 256

    def plan(self, number: int, block_hash: str | None) -> tuple[bool, range]:
        """(deliver it?, numbers missing before it)."""
        if block_hash is not None and block_hash in self.seen:
            return False, range(0)
        if self.highest is not None and number <= self.highest and block_hash is None:
            return False, range(0)
        if self.highest is not None and number > self.highest + 1:
            return True, range(self.highest + 1, number)
        return True, range(0)

    def delivered(self, number: int, block_hash: str | None) -> None:
        if block_hash is not None and block_hash not in self.seen:
            self.recent.append(block_hash)
            self.seen.add(block_hash)
            if len(self.recent) > self.RECENT:
                self.seen.discard(self.recent.popleft())
        if self.highest is None or number > self.highest:
            self.highest = number
