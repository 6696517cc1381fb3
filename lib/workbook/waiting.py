"""Waiting on a condition with a deadline: the only way the workbook synchronises with its services.

Every wait of the library is :func:`wait_until` (coroutines) or :func:`wait_until_sync` (blocking code,
such as a process supervisor), or is built on one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable

from workbook._exceptions import ConditionTimeout

POLL_S = 0.02

What = str | Callable[[], str]


def _describe(what: What) -> str:
    return what() if callable(what) else what


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout: float, what: What,  # noqa: ASYNC109
                     *, poll: float = POLL_S, wake: asyncio.Event | None = None,
                     error: type[Exception] = ConditionTimeout) -> float:
    """Check *check* (sync or async) until it is true; return the seconds it took.

    It is re-checked every *poll* seconds, and at once whenever *wake* is set (a client sets it on every
    frame it receives). At the deadline it raises *error* (default :class:`ConditionTimeout`) naming
    *what*: a text, or a callable that describes the last state seen.
    """
    started = time.monotonic()
    while True:
        if wake is not None:
            wake.clear()
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        remaining = timeout - (time.monotonic() - started)
        if remaining < 0:
            raise error(f"not reached within {timeout:g} s: {_describe(what)}")
        if wake is None:
            await asyncio.sleep(poll)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(remaining, poll))


def wait_until_sync(check: Callable[[], bool], timeout: float, what: What, *, poll: float = POLL_S) -> float:
    """The blocking twin of :func:`wait_until`, for code that runs outside an event loop."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise ConditionTimeout(f"not reached within {timeout:g} s: {_describe(what)}")
        time.sleep(poll)
    return time.monotonic() - started
