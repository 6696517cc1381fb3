"""Versions: a hybrid logical clock (wall ms, logical counter, node id as tie-break).

The physical part is the node's wall clock plus a fault-injectable offset. ``wall_clock_only`` puts
back the ``wall-clock-lww`` defect: versions are the (offset) wall clock alone, nothing is carried.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from kvstore.proto import kvstore_pb2 as pb


class Stamp(NamedTuple):
    """A version as an ordered tuple."""

    wall_ms: int
    logical: int
    node: str

    def to_pb(self) -> pb.Version:
        return pb.Version(wall_ms=self.wall_ms, logical=self.logical, node=self.node)

    @classmethod
    def from_pb(cls, v: pb.Version) -> Stamp:
        return cls(v.wall_ms, v.logical, v.node)


ZERO = Stamp(0, 0, "")


class ClockDriftError(ValueError):
    """A remote timestamp is further ahead of this node's clock than the allowed drift."""


class HybridClock:
    """Thread-safe HLC; ``observe`` moves it past remote versions (refusing ones too far ahead)."""

    def __init__(self, node: str, *, max_drift_s: float = 10.0, wall_clock_only: bool = False) -> None:
        self.node = node
        self.max_drift_ms = int(max_drift_s * 1000)
        self.wall_clock_only = wall_clock_only
        self.offset_s = 0.0
        self._wall = 0
        self._logical = 0
        self._lock = threading.Lock()

    def physical_ms(self) -> int:
        return int((time.time() + self.offset_s) * 1000)

    def now(self) -> Stamp:
        """A fresh version for a local write, greater than every version this clock has seen."""
        pt = self.physical_ms()
        if self.wall_clock_only:
            return Stamp(pt, 0, self.node)
        with self._lock:
            if pt > self._wall:
                self._wall, self._logical = pt, 0
            else:
                self._logical += 1
            return Stamp(self._wall, self._logical, self.node)

    def check(self, remote: Stamp) -> None:
        """Raise ClockDriftError when *remote* is too far ahead of this node's physical clock."""
        if self.wall_clock_only or remote.wall_ms == 0:
            return
        ahead = remote.wall_ms - self.physical_ms()
        if ahead > self.max_drift_ms:
            raise ClockDriftError(f"version {remote.wall_ms} ms is {ahead / 1000:.1f} s ahead of this node's "
                                  f"clock (max drift {self.max_drift_ms / 1000:.1f} s)")

    def observe(self, remote: Stamp) -> None:
        """Move the clock past *remote* (no-op for wall-clock versions)."""
        if self.wall_clock_only or remote.wall_ms == 0:
            return
        with self._lock:
            if (remote.wall_ms, remote.logical) > (self._wall, self._logical):
                self._wall, self._logical = remote.wall_ms, remote.logical

    def peek(self) -> Stamp:
        with self._lock:
            return Stamp(self._wall, self._logical, self.node)
