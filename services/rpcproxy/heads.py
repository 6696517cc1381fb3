"""newHeads delivery for one session: each block reaches the client once and in order across upstream moves,
and a gap a move left is filled from ``eth_getBlockByNumber`` (or, where it cannot be, counted and logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rpcproxy.config import ProxyConfig
from rpcproxy.jsonrpc import encode
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.tables import Subscription

HEADER_DROP = ("transactions", "uncles", "size", "totalDifficulty", "withdrawals")


class HeadPump:
    """Takes the newHeads headers the upstream side hands it and delivers them from one task, in order.

    It talks to its session only through the callables it is given: *out* queues a frame for the client,
    *call* makes a proxy-internal request on the current upstream, *holds* says whether the client still
    holds a subscription id, *event* writes a log event under the session's id.
    """

    def __init__(
        self,
        config: ProxyConfig,
        metrics: ProxyMetrics,
        *,
        out: Callable[[str], None],
        call: Callable[[str, list[Any]], Awaitable[Any]],
        holds: Callable[[str], bool],
        event: Callable[..., None],
    ) -> None:
        self.cfg = config
        self.metrics = metrics
        self._out = out
        self._call = call
        self._holds = holds
        self._event = event
        self._heads: asyncio.Queue[tuple[Subscription, dict[str, Any]]] = asyncio.Queue()

    def put(self, sub: Subscription, header: dict[str, Any]) -> None:
        """Hand over one newHeads header of *sub*; :meth:`run` delivers it."""
        self._heads.put_nowait((sub, header))

    async def run(self) -> None:
        """Deliver newHeads in order: drop blocks the client has, fill gaps from eth_getBlockByNumber."""
        m = self.metrics
        while True:
            sub, header = await self._heads.get()
            try:
                number = int(header.get("number"), 16)
            except (TypeError, ValueError):
                self._notify(sub, header)
                continue
            block_hash = header.get("hash") if isinstance(header.get("hash"), str) else None
            assert sub.heads is not None
            deliver, missing = sub.heads.plan(number, block_hash)
            if not deliver:
                m.heads_deduplicated.inc()
                continue
            if missing:
                await self._fill_gap(sub, missing)
            if self._holds(sub.client_id):
                self._notify(sub, header)
                sub.heads.delivered(number, block_hash)

    async def _fill_gap(self, sub: Subscription, missing: range) -> None:
        m = self.metrics
        limit = self.cfg.gap_fill_max
        fill = missing[-limit:] if limit else range(0)
        skipped = len(missing) - len(fill)
        if skipped:
            m.gaps_unfilled.inc(skipped)
            self._event(
                "ws.gap_unfilled",
                "warning",
                subscription=sub.client_id,
                blocks=skipped,
                first=missing[0],
                reason="gap larger than gap_fill_max",
            )
        # Fetched side by side (each under its own deadline), so a slow upstream holds the heads back for
        # about one deadline, not one per missing block; delivered in order below.
        blocks = await asyncio.gather(*(self._call("eth_getBlockByNumber", [hex(n), False]) for n in fill))
        for number, block in zip(fill, blocks, strict=True):
            if not isinstance(block, dict) or not self._holds(sub.client_id):
                m.gaps_unfilled.inc()
                self._event(
                    "ws.gap_unfilled",
                    "warning",
                    subscription=sub.client_id,
                    blocks=1,
                    first=number,
                    reason="eth_getBlockByNumber gave no block",
                )
                continue
            header = {k: v for k, v in block.items() if k not in HEADER_DROP}
            self._notify(sub, header)
            assert sub.heads is not None
            sub.heads.delivered(number, header.get("hash") if isinstance(header.get("hash"), str) else None)
            m.gaps_filled.inc()

    def _notify(self, sub: Subscription, result: Any) -> None:
        self._out(
            encode(
                {
                    "jsonrpc": "2.0",
                    "method": "eth_subscription",
                    "params": {"subscription": sub.client_id, "result": result},
                }
            )
        )
