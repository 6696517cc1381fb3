"""Load alongside a scenario: sampling the processes' CPU and memory, and forced reconnections on a timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from workbook.nemesis import Nemesis


async def sample_processes(processes: Mapping[str, Any], *, every: float,
                           stop: asyncio.Event) -> list[dict[str, Any]]:
    """Every *every* seconds until *stop*, each process's CPU seconds and resident memory (anything
    with ``usage() -> (cpu_seconds, rss_bytes)``, such as a :class:`~workbook.service.Service`): rows
    ``{wall, process, cpu_s, rss_mb}``, one first at once and one last at *stop*."""
    rows: list[dict[str, Any]] = []

    def sample() -> None:
        now = time.time()
        for name, proc in processes.items():
            cpu, rss = proc.usage()
            rows.append({"wall": now, "process": name, "cpu_s": cpu, "rss_mb": rss / 2**20})

    sample()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
        sample()
    return rows


async def forced_reconnections(nemesis: Nemesis, node: str, *, every: float, stop: asyncio.Event) -> int:
    """*node* closes every WebSocket (the proxy's upstream links on it) every *every* seconds until
    *stop*: the sessions on it must reconnect. Returns how many times."""
    count = 0
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every)
            return count
        except TimeoutError:
            await nemesis.drop_websockets(node)
            count += 1
