"""Fixtures for kvstore tests: ``start_cluster(...)`` builds a KVCluster on the test's fresh run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from workbook.kvcluster import KVCluster
from workbook.run import Run


@pytest.fixture
async def start_cluster(run: Run) -> AsyncIterator[Callable[..., Awaitable[KVCluster]]]:
    """``await start_cluster(nodes=3, defects=[...], write_quorum=None, extra_args=[...])``."""
    made: list[KVCluster] = []

    async def start(nodes: int = 3, **kwargs: Any) -> KVCluster:
        cluster = await KVCluster.start(run, nodes, **kwargs)
        made.append(cluster)
        return cluster

    yield start
    for cluster in made:
        await cluster.aclose()
