"""Fixtures of the workbook library's own tests: the tiny contract-obeying service."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TINY = [sys.executable, str(Path(__file__).resolve().parents[1] / "fixtures" / "tinyservice.py")]


@pytest.fixture
def tiny_program() -> list[str]:
    """The command that runs tests/fixtures/tinyservice.py, without arguments."""
    return list(TINY)


@pytest.fixture
def tiny() -> list[str]:
    """The command line of tests/fixtures/tinyservice.py, with port 0."""
    return [*TINY, "--listen", "127.0.0.1:0"]
