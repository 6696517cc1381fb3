"""What the WebSocket session core asks its driver to do, and the handle it names upstream links by.

The core (``wscore``) never touches a socket, a task or a clock; each event it is given returns a list of
these actions, and the driver (``session`` and ``mover`` under asyncio, or a test's simulation) performs
them in order. Actions are plain slotted records (not frozen: they are built on every frame, and a frozen
dataclass pays for each field on construction); nothing changes them after they are made.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field

_serial = itertools.count(1)


@dataclass(eq=False, slots=True)
class LinkRef:
    """One upstream WebSocket connection as the core knows it (identity-hashable: tables key on it)."""

    node: str
    serial: int = field(default_factory=lambda: next(_serial))

    def __repr__(self) -> str:
        return f"<LinkRef #{self.serial} {self.node}>"


@dataclass(slots=True)
class ToClient:
    """Send one text frame to the client; *heads*: a newHeads notification, which the session delivers
    from its own task (after the frames read with it), as the proxy always has."""

    text: str
    heads: bool = False


@dataclass(slots=True)
class ToLink:
    """Send one text frame on an upstream link (in order with the link's other frames)."""

    link: LinkRef
    text: str


@dataclass(slots=True)
class OpenLink:
    """Open a WebSocket to ``link.node``; answer with ``link_opened`` or ``link_failed``."""

    link: LinkRef


@dataclass(slots=True)
class CloseLink:
    """Close an upstream link; its end is reported as ``link_lost`` like any other."""

    link: LinkRef


@dataclass(slots=True)
class StartTimer:
    """Call ``timer(key)`` after *delay* seconds (a timer of the same key is replaced)."""

    key: Hashable
    delay: float


@dataclass(slots=True)
class CancelTimer:
    """Forget the timer *key* (a timer that fires anyway finds nothing to do)."""

    key: Hashable


@dataclass(slots=True)
class WaitRound:
    """Call ``round_passed()`` after the next health round, or after *within* seconds."""

    within: float


@dataclass(slots=True)
class WaitRouting:
    """Call ``routing_ready(nodes)`` with the healthy nodes once routing may read them (serialized)."""


@dataclass(slots=True)
class Ready:
    """The session's first move ended: attached to an upstream (*ok*) or gave up (close the client, 1013)."""

    ok: bool


Action = ToClient | ToLink | OpenLink | CloseLink | StartTimer | CancelTimer | WaitRound | WaitRouting | Ready
