"""Nothing outlives its run: the death signal, the registry, and ``workbook down``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from workbook import registry
from workbook.registry import Owner, RunRecord, proc_start_time
from workbook.run import Run
from workbook.runner import cli
from workbook.waiting import wait_until_sync

OWNER = """
import sys
from workbook.run import Run
run = Run.create("orphaned")
svc = run.start("a", sys.argv[1:] + ["--listen", "127.0.0.1:0"])
print(run.dir, svc.pid, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def own_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of this test's own, so `down` never sees a parallel worker's runs."""
    reg = tmp_path / "registry"
    reg.mkdir()
    monkeypatch.setenv("WORKBOOK_REGISTRY", str(reg))
    return reg


def wait_gone(pid: int, start: int | None, timeout: float = 10.0) -> None:
    wait_until_sync(lambda: not registry.is_alive(pid, start), timeout, f"process {pid} to exit", poll=0.01)


def test_sigkilled_owner_takes_its_services_along_and_down_cleans_up(own_registry: Path,
                                                                     tiny_program: list[str]) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, *tiny_program], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        run_dir, pid = owner.stdout.readline().split()
        svc_pid = int(pid)
        svc_start = proc_start_time(svc_pid)
        assert svc_start is not None
        assert len(list(own_registry.glob("*.json"))) == 1
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
    wait_gone(svc_pid, svc_start)  # PR_SET_PDEATHSIG
    assert Path(run_dir).exists(), "a SIGKILLed owner cannot clean up its directory"
    result = subprocess.run([sys.executable, "-m", "workbook.runner.cli", "down"], capture_output=True,
                            text=True, env=os.environ.copy(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "reaped orphaned-" in result.stdout
    assert not Path(run_dir).exists()
    assert list(own_registry.glob("*.json")) == []


def test_down_spares_live_owners_unless_all(own_registry: Path, tiny: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = Run.create("alive")
    try:
        svc = run.start("a", tiny)
        assert cli.main(["down"]) == 0
        assert "nothing to reap" in capsys.readouterr().out
        assert svc.alive
        assert cli.main(["down", "--all"]) == 0
        assert "a[" in capsys.readouterr().out
        assert svc.proc.wait(timeout=10) == 0  # SIGTERM first: a graceful stop
        assert not run.dir.exists()
    finally:
        run.close()


def test_down_kills_survivors_but_never_a_recycled_pid(own_registry: Path, tmp_path: Path) -> None:
    survivor = subprocess.Popen(["sleep", "60"])
    try:
        run_dir = tmp_path / "leftover"
        run_dir.mkdir()
        registry.record_process(run_dir, "survivor", survivor.pid, ["sleep", "60"])
        # a record whose pid now belongs to someone else (this test process): start time differs
        with open(run_dir / registry.PROCESSES_FILE, "a") as fh:
            fh.write(json.dumps({"name": "recycled", "pid": os.getpid(), "start_time": 1, "argv": []}) + "\n")
        dead_owner = Owner(os.getpid(), start_time=1)  # same pid, different start time: a dead owner
        RunRecord("leftover-1", run_dir, dead_owner, remove_dir=True).save()
        reports = registry.reap()
        assert [p["name"] for p in reports[0].killed] == ["survivor"]
        assert survivor.wait(timeout=10) == -signal.SIGTERM
        assert not run_dir.exists()
    finally:
        survivor.kill()
        survivor.wait()


def test_unreadable_registry_entries_are_ignored(own_registry: Path) -> None:
    (own_registry / "garbage.json").write_text("{not json")
    assert registry.reap() == []


def test_exit_hook_closes_runs_left_open(own_registry: Path, tiny_program: list[str]) -> None:
    script = OWNER.replace("sys.stdin.read()", "")  # exits without closing its run
    done = subprocess.run([sys.executable, "-c", script, *tiny_program], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=60)
    assert done.returncode == 0, done.stderr
    run_dir, pid = done.stdout.split()
    assert proc_start_time(int(pid)) is None, "the service must be stopped by the exit hook"
    assert not Path(run_dir).exists()
    assert list(own_registry.glob("*.json")) == []
