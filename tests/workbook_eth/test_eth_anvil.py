"""workbook.anvil: finds the pinned anvil, and says why when it cannot have one."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from workbook.anvil import ANVIL_VERSION, ensure_anvil, why_no_anvil


def test_without_npm_there_is_no_anvil_and_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryDirectory() as empty:
        monkeypatch.setenv("PATH", empty)  # no npm on it
        assert ensure_anvil(Path(empty) / "tools") is None
    assert "npm" in (why_no_anvil() or "")


@pytest.mark.anvil
def test_ensure_anvil_gives_the_pinned_version() -> None:
    path = ensure_anvil()
    if path is None:
        pytest.skip(f"anvil unavailable: {why_no_anvil()}")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert ANVIL_VERSION in out.stdout
    assert ensure_anvil() == path  # found again without installing
