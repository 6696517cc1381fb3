"""Helpers of the proxy's integration tests: fast settings, and waits on the proxy's own state."""

from __future__ import annotations

from typing import Any

from workbook.ethstack import EthStack, ProxyObserver
from workbook.waiting import wait_until as _wait_until

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


# The waits live on ProxyObserver (EthStack's base), used by the notebooks too; short names here.
wait_until = _wait_until
sessions = ProxyObserver.sessions
wait_sessions_on = ProxyObserver.wait_sessions_on
wait_moving = ProxyObserver.wait_moving
wait_moves = ProxyObserver.wait_moves
node_health = ProxyObserver.node_health
metric = ProxyObserver.metric
