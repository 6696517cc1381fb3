"""Helpers of the proxy's integration tests: fast settings, and waits on the proxy's own state."""

from __future__ import annotations

from typing import Any

from workbook.ethstack import EthStack
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


# The waits live on EthStack, where the notebooks use them too; these names keep the call sites short.
wait_until = _wait_until
sessions = EthStack.sessions
wait_sessions_on = EthStack.wait_sessions_on
wait_moving = EthStack.wait_moving
wait_moves = EthStack.wait_moves
node_health = EthStack.node_health
metric = EthStack.metric
