"""``workbook new``: the scaffold passes the conventions test and runs under ``workbook run`` unedited."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workbook.runner import cli, profiles

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import test_notebook_conventions as conventions  # noqa: E402  (a module name pytest does not collect again)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A notebook folder and a copy of the real profiles (the scaffold adds its sections to them)."""
    notebooks, params = tmp_path / "notebooks", tmp_path / "parameters"
    notebooks.mkdir()
    shutil.copytree(profiles.ROOT / "parameters", params)
    monkeypatch.setenv("WORKBOOK_PARAMETERS", str(params))
    return notebooks, params


@pytest.mark.timeout(400)
def test_new_notebooks_follow_the_conventions_and_run_unedited(project: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    notebooks, params = project
    made = []
    for nb_id, family in (("kv-98", "kv"), ("flaky-98", "flaky")):
        res = subprocess.run([sys.executable, "-m", "workbook.runner.cli", "--notebooks", str(notebooks),
                              "new", nb_id, "--family", family, "--title", f"Scaffold: {family}"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        [path] = (notebooks / family).glob(f"{nb_id}-*.ipynb")
        conventions.test_notebook_follows_conventions(path)
        made.append(path)
        for profile in params.glob("*.yaml"):
            assert nb_id in yaml.safe_load(profile.read_text())["notebooks"], profile.name
            profiles.load(profile)
    source = "\n".join("".join(c["source"]) for c in json.loads(made[0].read_text())["cells"])
    for name in ("History", "Nemesis", "checkers", "plots.timeline", "verdict.conclude"):
        assert name in source
    out = tmp_path / "out"
    reg = tmp_path / "registry"
    reg.mkdir()
    env = {**os.environ, "WORKBOOK_REGISTRY": str(reg)}
    res = subprocess.run([sys.executable, "-m", "workbook.runner.cli", "--notebooks", str(notebooks), "run",
                          "--jobs", "2", "--no-html", "--output", str(out)], env=env, capture_output=True,
                         text=True, timeout=360)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {r["id"]: r for r in json.loads((out / "summary.json").read_text())["results"]}
    assert set(rows) == {"kv-98", "flaky-98"}
    assert rows["kv-98"]["figures"]["acknowledged"] == 200 and rows["kv-98"]["figures"]["lost"] == 0
    assert rows["flaky-98"]["figures"]["answered"] == 50
    assert all(not r["reaped"] for r in rows.values())
    for path in made:  # the notebooks go; the temp folder holds nothing of them afterwards
        path.unlink()
    assert not list(notebooks.rglob("*.ipynb"))


def test_new_refuses_an_existing_id_and_a_bad_one(project: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    notebooks, params = project
    kv01 = profiles.ROOT / "notebooks" / "kv" / "kv-01-crash-recovery.ipynb"
    (notebooks / "kv").mkdir()
    shutil.copy(kv01, notebooks / "kv" / kv01.name)
    before = {p.name: p.read_text() for p in params.glob("*.yaml")}
    for argv, message in ((["kv-01", "--family", "kv", "--title", "x"], "notebook id 'kv-01' already exists"),
                          (["KV_1", "--family", "kv", "--title", "x"], "must be kebab-case")):
        assert cli.main(["--notebooks", str(notebooks), "new", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert {p.name: p.read_text() for p in params.glob("*.yaml")} == before, "a refused new changed a profile"
    assert [p.name for p in notebooks.rglob("*.ipynb")] == [kv01.name]
