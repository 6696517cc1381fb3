"""The node's view of the chain: the clock's head bent by the stall and lag knobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from elnode.chain import Chain
from elnode.faults import Faults


class Node:
    """Reports the head the clock says, unless stalled (head frozen) or lagging (N blocks behind)."""

    def __init__(self, chain: Chain, *, name: str, clock: Callable[[], float] = time.time) -> None:
        self.chain = chain
        self.name = name
        self.faults = Faults()
        self.clock = clock
        self._stall_head = 0

    def head(self) -> int:
        if self.faults.stall:
            return self._stall_head
        return max(0, self.chain.clock_head(self.clock()) - self.faults.lag_blocks)

    def clock_head(self) -> int:
        return self.chain.clock_head(self.clock())

    def set_faults(self, patch: Any) -> None:
        """Apply an admin patch; a stall freezes the head reported at the moment it is set."""
        head_before = self.head()
        was_stalled = self.faults.stall
        self.faults.apply(patch)
        if self.faults.stall and not was_stalled:
            self._stall_head = head_before

    def reset_faults(self) -> None:
        self.faults = Faults()

    def syncing(self) -> dict[str, str] | bool:
        """``eth_syncing``: a lagging node says it is syncing towards the clock's head; others say false."""
        if self.faults.lag_blocks and not self.faults.stall:
            return {"startingBlock": hex(self.head()), "currentBlock": hex(self.head()),
                    "highestBlock": hex(self.clock_head())}
        return False
