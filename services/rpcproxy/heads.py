"""newHeads delivery for one session: each block reaches the client once and in order across upstream moves,
and a gap a move left is filled from ``eth_getBlockByNumber`` (or, where it cannot be, counted and logged).

Free of I/O: the session core hands it headers and it answers through the callables it is given.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from rpcproxy.config import ProxyConfig
from rpcproxy.jsonrpc import encode
from rpcproxy.metrics import ProxyMetrics
from rpcproxy.tables import Subscription

HEADER_DROP = ("transactions", "uncles", "size", "totalDifficulty", "withdrawals")

Call = Callable[[str, list[Any], Callable[[Any], None]], None]


class _Fill:
    """A gap being filled: the blocks asked for, the answers so far, and the header that waits behind them."""

    def __init__(self, sub: Subscription, header: dict[str, Any], number: int, fill: range) -> None:
        self.sub = sub
        self.header = header
        self.number = number
        self.fill = fill
        self.blocks: list[Any] = [None] * len(fill)
        self.left = len(fill)
        self.issued = False


class HeadFeed:
    """Takes the newHeads headers of a session and delivers them in order, one gap fill at a time.

    It talks to its session only through the callables it is given: *out* queues a frame for the client,
    *call* starts a proxy-internal request on the current upstream and calls back with its result (None
    when there is none), *holds* says whether the client still holds a subscription id, *event* writes a
    log event under the session's id.
    """

    def __init__(
        self,
        config: ProxyConfig,
        metrics: ProxyMetrics,
        *,
        out: Callable[[str], None],
        call: Call,
        holds: Callable[[str], bool],
        event: Callable[..., None],
    ) -> None:
        self.cfg = config
        self.metrics = metrics
        self._out = out
        self._call = call
        self._holds = holds
        self._event = event
        self._queue: deque[tuple[Subscription, dict[str, Any]]] = deque()
        self._fill: _Fill | None = None  # the gap fill in progress; headers queue behind it
        self._pumping = False

    def put(self, sub: Subscription, header: dict[str, Any]) -> None:
        """Hand over one newHeads header of *sub*; it is delivered now, or after the gap fill ahead of it."""
        self._queue.append((sub, header))
        self._pump()

    def _pump(self) -> None:
        """Deliver queued headers in order: drop blocks the client has, start a gap fill where one is due."""
        if self._pumping:
            return
        self._pumping = True
        try:
            m = self.metrics
            while self._queue and self._fill is None:
                sub, header = self._queue.popleft()
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
                    self._start_fill(sub, header, number, missing)
                    continue
                self._deliver(sub, header, number, block_hash)
        finally:
            self._pumping = False

    def _deliver(
        self, sub: Subscription, header: dict[str, Any], number: int, block_hash: str | None
    ) -> None:
        if self._holds(sub.client_id):
            self._notify(sub, header)
            assert sub.heads is not None
            sub.heads.delivered(number, block_hash)

    def _start_fill(self, sub: Subscription, header: dict[str, Any], number: int, missing: range) -> None:
        limit = self.cfg.gap_fill_max
        fill = missing[-limit:] if limit else range(0)
        skipped = len(missing) - len(fill)
        if skipped:
            self.metrics.gaps_unfilled.inc(skipped)
            self._event(
                "ws.gap_unfilled",
                "warning",
                subscription=sub.client_id,
                blocks=skipped,
                first=missing[0],
                reason="gap larger than gap_fill_max",
            )
        # Asked for side by side (each under its own deadline), so a slow upstream holds the heads back for
        # about one deadline, not one per missing block; delivered in order once all have answered.
        job = self._fill = _Fill(sub, header, number, fill)
        for i, n in enumerate(fill):
            self._call("eth_getBlockByNumber", [hex(n), False], self._answer(job, i))
        job.issued = True
        if job.left == 0:
            self._finish(job)

    def _answer(self, job: _Fill, index: int) -> Callable[[Any], None]:
        def done(block: Any) -> None:
            job.blocks[index] = block
            job.left -= 1
            if job.left == 0 and job.issued:
                self._finish(job)

        return done

    def _finish(self, job: _Fill) -> None:
        m = self.metrics
        sub = job.sub
        assert sub.heads is not None
        for number, block in zip(job.fill, job.blocks, strict=True):
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
            sub.heads.delivered(number, header.get("hash") if isinstance(header.get("hash"), str) else None)
            m.gaps_filled.inc()
        block_hash = job.header.get("hash") if isinstance(job.header.get("hash"), str) else None
        self._deliver(sub, job.header, job.number, block_hash)
        self._fill = None
        self._pump()

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
