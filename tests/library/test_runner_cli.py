"""``workbook run``/``list``/``up`` on the fixture notebooks: exit status, summaries, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workbook import registry
from workbook.runner import cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    reg = tmp_path / "registry"
    reg.mkdir()
    return {**os.environ, "WORKBOOK_NOTEBOOKS": str(FIXTURES), "WORKBOOK_REGISTRY": str(reg)}


def workbook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbook.runner.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def summary(out: Path, res: subprocess.CompletedProcess[str] | None = None) -> dict:
    path = out / "summary.json"
    assert path.exists(), f"no summary; output: {res.stdout + res.stderr if res else ''}"
    return json.loads(path.read_text())


def test_passing_notebooks_in_both_modes(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = workbook(env, "run", "fx-pass", "--mode", "both", "--jobs", "2", "--output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = summary(out, res)
    rows = {(r["id"], r["mode"]): r for r in doc["results"]}
    assert set(rows) == {("fx-pass", "fixed"), ("fx-pass", "incident")}
    assert rows["fx-pass", "incident"]["reproduced"] is True
    assert rows["fx-pass", "fixed"]["reproduced"] is False
    assert rows["fx-pass", "incident"]["figures"] == {"total": 55, "expected": 45}
    assert rows["fx-pass", "fixed"]["parameters"]["profile"] == "ci"
    for row in rows.values():
        assert row["verdict"] == "pass"
        for key in ("notebook", "html", "sidecar"):
            assert row["paths"][key] and (out / row["paths"][key]).is_file(), (key, row)
    sidecar = json.loads((out / rows["fx-pass", "incident"]["paths"]["sidecar"]).read_text())
    assert sidecar["notebook"] == "fx-pass" and sidecar["mode"] == "incident" and sidecar["seed"] == 1
    executed = json.loads((out / "fx-pass.incident.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    for name in ("summary.md", "summary.html"):
        assert "fx-pass" in (out / name).read_text()
    assert "[2/2]" in res.stdout


def test_failure_and_time_limit_are_reported_and_nothing_is_left(env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    profile = tmp_path / "limits.yaml"  # the time limit comes from fx-slow's own section of the profile
    # The limit must let the cells before the hanging one finish even on a loaded machine (a kernel
    # start and the service's start took over 12 s at load average 10), then hit the hanging cell.
    profile.write_text("timeout: 120\nnotebooks:\n  fx-slow: {timeout: 30}\n")
    res = workbook(env, "run", "fx-fail", "fx-slow", "--jobs", "2", "--profile", str(profile),
                   "--no-html", "--output", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    rows = {r["id"]: r for r in summary(out, res)["results"]}
    fail = rows["fx-fail"]
    assert fail["verdict"] == "fail" and fail["reproduced"] is True
    assert "conclude(" in fail["failure"]["source"]
    assert fail["failure"]["error"].startswith("VerdictError: the invariant does not hold")
    slow = rows["fx-slow"]
    assert slow["verdict"] == "timeout"
    assert "Event().wait()" in slow["failure"]["source"], "the limit must have hit the hanging cell"
    assert "FAILED fx-fail" in res.stdout and "time limit of 30 s exceeded" in res.stdout
    [processes] = (out / "runs" / "fx-slow.fixed").glob("*/processes.jsonl")
    started = [json.loads(line) for line in processes.read_text().splitlines()]
    assert [p["name"] for p in started] == ["tiny"]
    assert not any(registry.is_alive(p["pid"], p["start_time"]) for p in started)
    assert list(Path(env["WORKBOOK_REGISTRY"]).glob("*.json")) == []


def test_interrupted_run_stops_everything_and_still_summarises(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "workbook.runner.cli", "run", "fx-slow", "--no-html",
                             "--output", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((out / "runs").glob("fx-slow.fixed/*/tiny.ready.json")):
            assert time.monotonic() < deadline and proc.poll() is None, "the fixture service never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, output
    [row] = summary(out)["results"]
    assert row["verdict"] == "interrupted"
    [processes] = (out / "runs" / "fx-slow.fixed").glob("*/processes.jsonl")
    started = [json.loads(line) for line in processes.read_text().splitlines()]
    assert started and not any(registry.is_alive(p["pid"], p["start_time"]) for p in started)
    assert list(Path(env["WORKBOOK_REGISTRY"]).glob("*.json")) == []


def test_repeat_counts_passes_per_notebook_and_mode(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = workbook(env, "run", "fx-nodefect", "--repeat", "2", "--jobs", "2", "--no-html",
                   "--output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = summary(out)
    assert doc["repeat_counts"] == {"fx-nodefect/fixed": {"passed": 2, "runs": 2}}
    assert sorted(r["paths"]["notebook"] for r in doc["results"]) == [
        "fx-nodefect.fixed.r1.ipynb", "fx-nodefect.fixed.r2.ipynb"]
    assert "fx-nodefect/fixed: 2/2 passed" in res.stdout
    index = (out / "index.html").read_text()  # the site's stability record: passes and the duration spread
    assert "2/2 passed" in index and "median" in index and index.count('href="fx-nodefect.fixed.r') == 4


def test_list_shows_modes_and_defects(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--notebooks", str(FIXTURES), "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "fixed+incident" in lines["fx-pass"] and "off-by-one" in lines["fx-pass"]
    assert "(none: fixed only)" in lines["fx-nodefect"]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "nope"], "unknown notebook id 'nope'"),
    (["run", "--profile", "staging"], "profile 'staging' not found"),
    (["run", "--jobs", "0"], "--jobs and --repeat must be at least 1"),
    (["run", "--mode", "sideways"], "argument --mode: invalid choice"),
])
def test_bad_requests_fail_with_one_line(args: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) if "--mode" in args else _noraise() as caught:
        status = cli.main(["--notebooks", str(FIXTURES), *args])
    status = caught.value.code if caught else status
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1


class _noraise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_profile_section_naming_an_undeclared_parameter_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "odd.yaml"
    profile.write_text("timeout: 10\nnotebooks:\n  fx-pass: {termz: 3}\n")
    assert cli.main(["--notebooks", str(FIXTURES), "run", "fx-pass", "--profile", str(profile)]) == 2
    assert "fx-pass has no parameter 'termz'" in capsys.readouterr().err
    profile.write_text("timeout: 10\nnotebooks:\n  fx-pass: {terms: many}\n")
    assert cli.main(["--notebooks", str(FIXTURES), "run", "fx-pass", "--profile", str(profile)]) == 2
    assert "parameter 'terms' must be int, got 'many'" in capsys.readouterr().err


def test_nothing_to_run_is_not_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "notebooks"
    empty.mkdir()
    out = tmp_path / "out"
    assert cli.main(["--notebooks", str(empty), "run", "--output", str(out)]) == 0
    assert summary(out)["results"] == []
    assert cli.main(["--notebooks", str(FIXTURES), "run", "fx-nodefect", "--mode", "incident",
                     "--output", str(out)]) == 0
    assert summary(out)["skipped"][0]["id"] == "fx-nodefect"
    capsys.readouterr()
