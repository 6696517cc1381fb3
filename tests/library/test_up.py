"""``workbook up --detach`` brings the whole topology up, and ``workbook down`` leaves nothing of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest


def workbook(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbook.runner.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


@pytest.mark.timeout(180)
def test_up_detached_then_down(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "WORKBOOK_REGISTRY": str(tmp_path / "registry")}
    up = workbook("up", "--detach", "--block-time", "0.5", env=env)
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / f"workbook-{os.getuid()}" / "up.json").read_text())
        assert set(state["endpoints"]) == {"kv1", "kv2", "kv3", "el1", "el2", "proxy"}
        pids = [state["pid"], *(e["pid"] for e in state["endpoints"].values())]
        assert all(alive(p) for p in pids)
        for name, ends in state["endpoints"].items():
            assert name in up.stdout and (ends.get("grpc") or ends["http"]) in up.stdout
        body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "eth_chainId"}).encode()
        req = urllib.request.Request(state["endpoints"]["proxy"]["http"], data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            assert json.loads(reply.read())["id"] == 7
        again = workbook("up", "--detach", env=env)
        assert again.returncode == 2 and "already up" in again.stderr
    finally:
        down = workbook("down", env=env)
    assert down.returncode == 0 and "stopped the detached topology" in down.stdout
    assert not any(alive(p) for p in pids)
    assert not Path(state["run_dir"]).exists()
