"""A verdict must depend on what the run observed, not on the mode it was told.

Each notebook with an incident mode is run against its own verdict: in ``incident`` mode with its
defect switches removed, it must fail with "the incident did not reproduce"; in ``fixed`` mode with
its switches forced on, it must fail with "the invariant does not hold". (The notebooks' ``defects``
parameter overrides the switches a mode would choose.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from workbook import runner
from workbook.runner import catalog, profiles

ROOT = Path(__file__).resolve().parents[1]
WITH_INCIDENT = [i for i in catalog.discover(ROOT / "notebooks") if "incident" in i.modes]
CASES = [(info, mode) for info in WITH_INCIDENT for mode in ("incident", "fixed")]
EXPECTED = {"incident": "the incident did not reproduce", "fixed": "the invariant does not hold"}


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(("info", "mode"), CASES, ids=[f"{i.id}-{m}-switched" for i, m in CASES])
def test_verdict_follows_the_switches(info: catalog.NotebookInfo, mode: str, tmp_path: Path) -> None:
    assert "defects" in info.parameters(), f"{info.id}: no `defects` parameter to override its switches"
    (job,), _ = runner.plan([info], [info.id], mode, profiles.load("ci"), 1, None)
    job.parameters["defects"] = [] if mode == "incident" else list(info.defects)
    row = runner.execute(job, tmp_path, threading.Event(), render=False)
    flipped = f"{info.id} ({mode}, switches flipped)"
    assert row["verdict"] == "fail", f"{flipped}: {row['verdict']}: {row['message']}"
    assert row["message"].startswith(EXPECTED[mode]), row["message"]
    assert not row["reaped"], f"the notebook left processes behind: {row['reaped']}"
