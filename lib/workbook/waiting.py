"""Waiting on a condition with a deadline: the only way the workbook synchronises with its services."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.02


class ConditionTimeout(AssertionError):
    """A condition did not become true before its deadline (the message says which)."""


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str,  # noqa: ASYNC109
                     *, poll: float = POLL_S) -> float:
    """Poll *check* (sync or async) every *poll* seconds until it is true; return the seconds it took.

    Raises :class:`ConditionTimeout` naming *what* at the deadline.
    """
    started = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise ConditionTimeout(f"not reached within {timeout:g} s: {what}")
        await asyncio.sleep(poll)
