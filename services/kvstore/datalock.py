"""An exclusive lock on a data directory, so a second node on the same directory fails at once."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirLocked(RuntimeError):
    """Another live process holds the data directory."""


class DataDirLock:
    """``flock`` on ``DIR/LOCK``, whose content names the holder (pid and node name)."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        self.path = Path(data_dir) / "LOCK"
        self.holder = holder
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = os.pread(fd, 256, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise DataDirLocked(f"data directory {self.path.parent} is locked by {held_by}; "
                                "is another kvstore node running on it?") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({self.holder})\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
