"""Process supervision: start, readiness, kill, pause, restart, clear errors, isolation of runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
from workbook._exceptions import ServiceError
from workbook.registry import proc_start_time
from workbook.run import Run
from workbook.service import http_health


def proc_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def get(url: str, timeout: float = 2.0) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return resp.read()


def test_start_waits_for_ready_file_and_health(run: Run, tiny: list[str]) -> None:
    svc = run.start("a", tiny, health=http_health("/health"))
    assert svc.alive
    assert svc.info["pid"] == svc.pid
    host, port = svc.address.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert svc.url("http") == f"http://{svc.address}/"
    assert get(svc.url("http") + "health") == b"ok"
    assert [r["event"] for r in svc.logs()] == ["ready"]
    assert svc.log_path == run.dir / "a.log.jsonl"
    with pytest.raises(ServiceError, match="no 'grpc' endpoint"):
        svc.url("grpc")


def test_kill_is_sigkill(run: Run, tiny: list[str]) -> None:
    svc = run.start("a", tiny)
    assert svc.kill() == -9
    assert not svc.alive
    assert svc.returncode == -9


def test_stop_is_graceful_then_forced(run: Run, tiny: list[str]) -> None:
    polite = run.start("polite", tiny)
    assert polite.stop(grace=5) == 0
    assert polite.logs()[-1]["event"] == "stopping"
    stubborn = run.start("stubborn", [*tiny, "--ignore-sigterm"])
    assert stubborn.stop(grace=0.2) == -9


def test_pause_holds_the_process_and_resume_releases_it(run: Run, tiny: list[str]) -> None:
    svc = run.start("a", tiny, health=http_health())
    svc.pause()
    assert proc_state(svc.pid) == "T"
    assert not http_health(timeout=0.2)(svc), "a stopped process must not answer"
    svc.resume()
    assert proc_state(svc.pid) in "RS"
    assert http_health()(svc)


def test_restart_keeps_address_and_data_dir(run: Run, tiny: list[str]) -> None:
    data = run.data_dir("a")
    svc = run.start("a", [*tiny, "--data-dir", str(data)], health=http_health())
    address, pid = svc.address, svc.pid
    assert svc.info["starts"] == 1
    svc.kill()
    svc.restart()
    assert svc.address == address
    assert svc.pid != pid
    assert svc.info["starts"] == 2, "the restarted process must see the same data directory"
    assert svc.info["pid"] == svc.pid, "the stale ready file must not be taken for the new one"
    svc.restart()  # restart of a running service stops it first
    assert svc.info["starts"] == 3 and svc.address == address


def test_service_that_dies_before_ready_is_reported_clearly(run: Run, tiny: list[str]) -> None:
    with pytest.raises(ServiceError) as err:
        run.start("broken", [*tiny, "--fail-before-ready", "cannot open store: disk on fire"],
                  ready_timeout=10)
    text = str(err.value)
    assert "'broken'" in text
    assert "exit code 3" in text
    assert "disk on fire" in text
    assert "\n" not in text


def test_unhealthy_service_times_out_and_is_killed(run: Run, tiny: list[str]) -> None:
    with pytest.raises(ServiceError) as err:
        run.start("sick", [*tiny, "--unhealthy"], health=http_health(), ready_timeout=0.5)
    assert "still running" in str(err.value)
    assert "not ready within 0.5 s" in str(err.value)
    assert not run["sick"].alive


def test_unknown_program_is_a_clear_error(run: Run) -> None:
    with pytest.raises(ServiceError, match="no-such-program-xyz"):
        run.start("x", ["no-such-program-xyz", "--listen", "127.0.0.1:0"])


def test_two_runs_never_collide(tiny: list[str]) -> None:
    with Run.create("twin") as one, Run.create("twin") as two:
        a = one.start("svc", tiny)
        b = two.start("svc", tiny)
        assert one.dir != two.dir
        assert a.address != b.address
        one.close()
        assert not a.alive and b.alive
        assert not one.dir.exists() and two.dir.exists()


def test_close_stops_everything_and_removes_the_temp_dir(tiny: list[str]) -> None:
    run = Run.create("closing")
    svcs = [run.start(f"s{i}", tiny) for i in range(2)]
    svcs[1].pause()  # a paused process must still be stopped
    run.close(grace=2)
    assert all(s.returncode is not None for s in svcs)
    assert not run.dir.exists()
    assert not run.record.entry_path.exists()


def test_explicit_directory_keeps_logs_but_not_data(tmp_path: Path, tiny: list[str]) -> None:
    with Run.create("kept", directory=tmp_path / "out") as run:
        svc = run.start("a", [*tiny, "--data-dir", str(run.data_dir("a"))])
        svc.stop()
    assert (tmp_path / "out" / "a.log.jsonl").exists()
    assert (tmp_path / "out" / "processes.jsonl").exists()
    assert not (tmp_path / "out" / "data").exists()


def test_service_outlives_the_thread_that_asked_for_it(run: Run, tiny: list[str]) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: spawning must not happen on the caller's.
    holder: list = []
    t = threading.Thread(target=lambda: holder.append(run.start("a", tiny)))
    t.start()
    t.join()
    svc = holder[0]
    with pytest.raises(subprocess.TimeoutExpired):
        svc.wait(timeout=0.3)
    assert proc_start_time(svc.pid) is not None


async def test_async_variants_do_not_block_the_loop(run: Run, tiny: list[str]) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        svc = await run.astart("a", tiny, health=http_health())
        before = ticks
        address = svc.address
        await svc.arestart()
        assert svc.address == address and svc.alive
        assert ticks > before, "the event loop must keep running during arestart"
        assert await svc.astop() == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # the ticker has ended before the test does


def test_children_carry_the_death_signal(run: Run, tiny: list[str]) -> None:
    svc = run.start("a", tiny)
    status = Path(f"/proc/{svc.pid}/status").read_text()
    ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid"))
    assert int(ppid) == os.getpid()
    assert svc.info["service"] == "tinyservice", "the launcher must exec the service in its own pid"
