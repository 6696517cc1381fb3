"""Shared fixtures: ``run`` is a fresh :class:`workbook.topology.Run` per test, closed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from workbook.topology import Run


@pytest.fixture
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """A fresh run (temporary directory, services, links), stopped and removed after the test."""
    r = Run.create(request.node.name)
    try:
        yield r
    finally:
        r.close()
