"""Shared fixtures: ``run`` is a fresh :class:`workbook.run.Run` per test, closed after it.

Each pytest session also gets a temp root of its own, removed at its end. With
``tmp_path_retention_policy = "none"`` pytest neither keeps nor locks its numbered base temp dir, so a
second session on the machine (another terminal, a helper, an IDE) deleted the first one's directories
mid-test: a notebook's output file vanished, and papermill reported no output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from workbook.run import Run

_PRIVATE_TEMPROOT = "_workbook_private_temproot"


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return  # an xdist worker (its base temp comes from the controller), or the caller chose a root
    root = tempfile.mkdtemp(prefix="workbook-pytest-")
    os.environ["PYTEST_DEBUG_TEMPROOT"] = root
    setattr(config, _PRIVATE_TEMPROOT, root)


def pytest_unconfigure(config: pytest.Config) -> None:
    root = getattr(config, _PRIVATE_TEMPROOT, None)
    if root is not None:
        os.environ.pop("PYTEST_DEBUG_TEMPROOT", None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """A fresh run (temporary directory, services, links), stopped and removed after the test."""
    r = Run.create(request.node.name)
    try:
        yield r
    finally:
        r.close()
