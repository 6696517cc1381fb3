"""Load alongside a scenario: sampling the processes' CPU and memory, and forced reconnections on a timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from workbook.nemesis import Nemesis
from workbook.waiting import wait_until


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


async def repeated_moves(nemesis: Nemesis, observer: Any, node: str, *, sessions: int, times: int,
                         timeout: float, process: Any = None) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """*node* closes every WebSocket *times* times; after each, wait until the proxy (*observer*) has moved
    all *sessions* back onto *node*. Brings the proxy to the working set of a move of every session before
    a measurement of its memory. One row per move: the sessions the proxy moved, and the resident memory
    of *process* (anything with ``usage()``, e.g. the proxy's Service) once they were back."""
    rows = []
    for move in range(1, times + 1):
        before = await observer.metric("rpcproxy_ws_moves_total", outcome="ok")
        seen = [before]

        async def all_moved(before: float = before, seen: list[float] = seen) -> bool:
            seen.append(await observer.metric("rpcproxy_ws_moves_total", outcome="ok"))
            return seen[-1] - before >= sessions

        await nemesis.drop_websockets(node)
        await wait_until(all_moved, timeout, f"the proxy to move {sessions} sessions off the dropped links")
        await observer.wait_sessions_on(node, sessions, timeout)
        moved = int(seen[-1] - before)
        rss = process.usage()[1] / 2**20 if process is not None else None
        rows.append({"move": move, "sessions_moved": moved, "rss_mb": rss})
    return rows
