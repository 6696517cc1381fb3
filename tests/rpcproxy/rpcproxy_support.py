"""Helpers of the proxy's integration tests: fast settings, and waits on the proxy's own state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from workbook.ethstack import EthStack, samples

BLOCK_TIME = 0.25
FAST: dict[str, Any] = {
    "health_interval": 0.1,
    "check_timeout": 0.3,
    "unhealthy_after": 2,
    "healthy_after": 2,
    "failback_after": 0.3,
    "request_timeout": 1.0,
    "ws_connect_timeout": 5.0,
    "ws_resubscribe_timeout": 5.0,
    "ws_drain_timeout": 1.0,
    "ws_move_timeout": 10.0,
}


async def start_stack(run: Any, defects: tuple[str, ...] = (), **settings: Any) -> EthStack:
    return await EthStack.start(run, defects=defects, settings={**FAST, **settings}, block_time=BLOCK_TIME)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:  # noqa: ASYNC109
    """Poll *check* every 20 ms until true; returns the seconds it took; AssertionError at the deadline."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def sessions(stack: EthStack) -> list[dict[str, Any]]:
    return (await stack.status())["session_details"]


async def wait_sessions_on(stack: EthStack, upstream: str, count: int = 1, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until *count* sessions are attached to *upstream* and none is moving."""

    async def check() -> bool:
        details = await sessions(stack)
        return sum(1 for s in details if s["upstream"] == upstream and not s["moving"]) == count and not any(
            s["moving"] for s in details
        )

    await wait_until(check, timeout, f"{count} session(s) settled on {upstream}")


async def wait_moving(stack: EthStack, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async def check() -> bool:
        return any(s["moving"] for s in await sessions(stack))

    await wait_until(check, timeout, "a session is moving")


async def wait_moves(stack: EthStack, moves: int, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until a session has completed *moves* moves (the initial attach counts as one) and settled."""

    async def check() -> bool:
        details = await sessions(stack)
        return bool(details) and all(s["moves"] >= moves and not s["moving"] for s in details)

    await wait_until(check, timeout, f"sessions made {moves} moves")


async def node_health(stack: EthStack, name: str) -> dict[str, Any]:
    return next(n for n in (await stack.status())["nodes"] if n["name"] == name)


async def metric(stack: EthStack, name: str, **labels: str) -> float:
    """Sum of the samples of *name* matching *labels* on the proxy's /metrics."""
    return sum(value for _labels, value in samples(await stack.metrics(), name, **labels))
