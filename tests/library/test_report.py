"""The run's report on the fixture notebooks: the site (index and pages, links relative), ``junit.xml`` read
back with junitparser, ``--shard K/N`` and ``workbook report merge`` against one full run."""

from __future__ import annotations

import contextlib
import fcntl
import html.parser
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from junitparser import Error, Failure, JUnitXml
from workbook.runner import cli, shard

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks"
SET = ["fx-pass", "fx-fail", "fx-nodefect"]  # 4 executions: fx-pass in both modes, the others fixed only


def workbook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbook.runner.cli", *args], env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    reg = tmp_path_factory.mktemp("registry")
    return {**os.environ, "WORKBOOK_NOTEBOOKS": str(FIXTURES), "WORKBOOK_REGISTRY": str(reg)}


@contextlib.contextmanager
def once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str) -> Iterator[tuple[Path, bool]]:
    """A folder made once per session and only read afterwards, shared by the xdist workers (a lock file
    in the session's temp root): yields it and whether it still has to be made."""
    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent
    done = root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = not done.exists()
        yield root / name, todo
        done.touch()


@pytest.fixture(scope="session")
def full(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One full run of SET, pages included (exit 1: fx-fail's verdict does not hold)."""
    with once(tmp_path_factory, worker_id, "report-full") as (out, todo):
        if todo:
            env = {**os.environ, "WORKBOOK_NOTEBOOKS": str(FIXTURES)}
            res = workbook(env, "run", *SET, "--jobs", "2", "--output", str(out))
            assert res.returncode == 1, res.stdout + res.stderr
    return out


@pytest.fixture(scope="session")
def shards(full: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> list[Path]:
    """SET split in two (run side by side), balanced by the full run's durations file."""
    with once(tmp_path_factory, worker_id, "report-shards") as (base, todo):
        outs = [base / f"shard-{k}" for k in (1, 2)]
        if todo:
            env = {**os.environ, "WORKBOOK_NOTEBOOKS": str(FIXTURES)}
            procs = [subprocess.Popen([sys.executable, "-m", "workbook.runner.cli", "run", *SET, "--shard",
                                       f"{k}/2", "--durations", str(full / "durations.json"), "--no-html",
                                       "--output", str(outs[k - 1])], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for k in (1, 2)]
            for proc in procs:
                output, _ = proc.communicate(timeout=240)
                assert proc.returncode in (0, 1), output
    return outs


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and name == "href":
                self.hrefs.append(value)
            elif value is not None and name == "src":
                self.srcs.append(value)


def links(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def local_target(page: Path, href: str) -> Path | None:
    """The file a relative link points at (None for an in-page anchor or a data: URI)."""
    parts = urlsplit(href)
    if href.startswith("#") or parts.scheme == "data":
        return None
    assert not parts.scheme and not parts.netloc and not href.startswith("/"), f"{page.name}: link {href!r}"
    return page.parent / parts.path


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_the_site_links_every_execution_and_works_when_moved(full: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    shutil.copytree(full, moved)
    index = moved / "index.html"
    found = links(index)
    rows = summary(moved)["results"]
    assert len(rows) == 4
    for row in rows:
        assert row["paths"]["html"] in found.hrefs, f"no link to {row['paths']['html']}"
        assert row["paths"]["log"] in found.hrefs
    for href in found.hrefs:  # every link of the index resolves inside the moved copy
        target = local_target(index, href)
        assert target is None or target.exists(), f"index.html: broken link {href!r}"
    text = index.read_text()
    assert "the invariant does not hold: observed a duplicate value" in text  # fx-fail's verdict message
    assert "verdict.conclude(symptom=len(set(observed))" in text  # ... and its failing cell, on the index
    assert '<h2 id="family-general">' in text
    incident = moved / "fx-pass.incident.html"
    page = links(incident)
    assert "fx-pass.fixed.html" in page.hrefs, "the fixed mode is one click from the incident mode"
    assert "fx-pass.incident.html" in links(moved / "fx-pass.fixed.html").hrefs
    for href in page.hrefs:
        target = local_target(incident, href)
        assert target is None or target.exists(), f"{incident.name}: broken link {href!r}"
    assert not [s for s in page.srcs if not s.startswith("data:")], "a page loads something from elsewhere"
    assert "data:image/png;base64" in (moved / "fx-pass.incident.html").read_text() or not any(
        o.get("data", {}).get("image/png") for c in json.loads((moved / "fx-pass.incident.ipynb").read_text())
        ["cells"] for o in c.get("outputs", []))


def test_junit_has_one_testcase_per_execution(full: Path) -> None:
    xml = JUnitXml.fromfile(str(full / "junit.xml"))
    cases = {(c.classname, c.name): c for suite in xml for c in suite}
    assert set(cases) == {("general", "fx-pass[fixed]"), ("general", "fx-pass[incident]"),
                          ("general", "fx-fail[fixed]"), ("general", "fx-nodefect[fixed]")}
    assert xml.tests == 4 and xml.failures == 1 and xml.errors == 0
    [failure] = cases["general", "fx-fail[fixed]"].result
    assert isinstance(failure, Failure)
    assert failure.message.startswith("the invariant does not hold: observed a duplicate value")
    assert "verdict.conclude(symptom=len(set(observed))" in failure.text
    assert cases["general", "fx-pass[incident]"].is_passed


def test_junit_reports_a_timeout_as_an_error(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 30 s: the cells before the hanging one must finish first, also on a loaded machine (8 s did not)
    res = workbook(env, "run", "fx-slow", "--timeout", "30", "--no-html", "--output", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    [case] = [c for suite in JUnitXml.fromfile(str(out / "junit.xml")) for c in suite]
    [error] = case.result
    assert isinstance(error, Error) and error.type == "timeout"
    assert error.message == "time limit of 30 s exceeded"
    assert error.text.startswith("cell ") and "time limit exceeded here" in error.text  # the cell it hit


def _verdicts(out: Path) -> list[tuple]:
    return sorted((r["id"], r["mode"], r["repeat"], r["verdict"], r["passed"], r["reproduced"],
                   json.dumps(r["figures"], sort_keys=True), r["message"]) for r in summary(out)["results"])


def _junit(out: Path) -> list[tuple]:
    return sorted((c.classname, c.name, tuple((type(r).__name__, r.message) for r in c.result))
                  for suite in JUnitXml.fromfile(str(out / "junit.xml")) for c in suite)


def test_two_shards_merged_equal_one_full_run(full: Path, shards: list[Path], tmp_path: Path) -> None:
    parts = [summary(s)["shard"] for s in shards]
    assert [p["index"] for p in parts] == [1, 2] and parts[0]["units"] == parts[1]["units"]
    assert set(parts[0]["mine"]).isdisjoint(parts[1]["mine"])
    assert all(p["mine"] for p in parts), "a shard got nothing: the split is not balanced"
    merged = tmp_path / "merged"
    res = workbook(dict(os.environ), "report", "merge", *map(str, shards), "--output", str(merged))
    assert res.returncode == summary(full)["exit_status"] == 1, res.stdout + res.stderr
    assert _verdicts(merged) == _verdicts(full)
    assert _junit(merged) == _junit(full)
    doc = summary(merged)
    assert [s["index"] for s in doc["shards"]] == [1, 2]
    for row in doc["results"]:  # every file of every execution came along
        assert (merged / row["paths"]["notebook"]).is_file() and (merged / row["paths"]["log"]).is_file()
    assert (merged / "index.html").is_file()
    assert set(json.loads((merged / "durations.json").read_text())) == set(parts[0]["units"])


def test_merge_refuses_what_is_not_one_whole_run(shards: list[Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        ([shards[0]], "missing shard(s) 2/2"),
        ([shards[0], shards[0], shards[1]], "shard 1/2 given twice"),
        ([shards[0], tmp_path], "not a workbook run output (no summary.json)"),
    ]
    for dirs, message in cases:
        assert cli.main(["report", "merge", *map(str, dirs), "--output", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(("spec", "message"), [
    ("3/2", "--shard K/N needs 1 <= K <= N, got '3/2'"),
    ("0/2", "--shard K/N needs 1 <= K <= N, got '0/2'"),
    ("x", "--shard must be K/N (e.g. 1/2), got 'x'"),
])
def test_a_bad_shard_gets_one_line_and_status_2(spec: str, message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["--notebooks", str(FIXTURES), "run", "--shard", spec, "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_the_partition_is_deterministic_disjoint_and_balanced() -> None:
    units = [f"n{i}[fixed]" for i in range(7)]
    by_count = shard.partition(units, 3, {})
    assert [len(p) for p in by_count] == [3, 2, 2]  # no durations: by count, round robin in plan order
    assert sorted(u for p in by_count for u in p) == sorted(units)
    durations = {"n0[fixed]": 100.0, "n1[fixed]": 10.0, "n2[fixed]": 10.0, "n3[fixed]": 10.0,
                 "n4[fixed]": 50.0, "n5[fixed]": 50.0}  # n6 unknown: the mean of the known ones (~38)
    parts = shard.partition(units, 3, durations)
    assert parts == shard.partition(list(units), 3, dict(durations))  # deterministic
    assert parts[0] == ["n0[fixed]"]  # the longest alone; the rest balanced around it
    totals = sorted(sum(durations.get(u, 38.3) for u in p) for p in parts)
    assert totals[-1] - totals[0] <= 50
    assert all(p == sorted(p, key=units.index) for p in parts)  # each part keeps the plan's order
