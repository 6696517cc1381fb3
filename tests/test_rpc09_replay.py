"""rpc-09's schedule is a function of its seed, and ``replay`` applies a saved schedule exactly: the
notebook runs twice with one seed and once replaying the first run's ``schedule.json``; the three
schedules (and the faults applied, in order) are equal."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from workbook import Schedule, runner
from workbook.runner import catalog, profiles

ROOT = Path(__file__).resolve().parents[1]
(RPC09,) = [i for i in catalog.discover(ROOT / "notebooks") if i.id == "rpc-09"]


def _run(tmp: Path, **parameters: object) -> dict:
    (job,), _ = runner.plan([RPC09], [RPC09.id], "fixed", profiles.load("ci"), 1, None)
    job.parameters.update(parameters)
    tmp.mkdir()
    row = runner.execute(job, tmp, threading.Event(), render=False)
    assert row["verdict"] == "pass", f"{row['verdict']}: {row['message']}"
    assert not row["reaped"], f"the notebook left processes behind: {row['reaped']}"
    return row["figures"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_same_seed_same_schedule_and_replay_applies_it_again(tmp_path: Path) -> None:
    first = _run(tmp_path / "first", seed=7)
    second = _run(tmp_path / "second", seed=7)
    replayed = _run(tmp_path / "replay", seed=1, replay=first["schedule_file"])
    docs = [json.loads(Path(f["schedule_file"]).read_text()) for f in (first, second, replayed)]
    schedules = [Schedule.from_json(d) for d in docs]
    assert schedules[0] == schedules[1] == schedules[2]
    assert schedules[0].seed == 7 and len(schedules[0]) >= 5
    applied = [[(a["kind"], a["target"]) for a in d["applied"]] for d in docs]
    assert applied[0] == applied[1] == applied[2] == [(f.kind, f.target) for f in schedules[0].faults]
    assert first["schedule_digest"] == second["schedule_digest"] == replayed["schedule_digest"]
