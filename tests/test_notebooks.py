"""Every committed notebook in every mode it has, executed through papermill with the ``ci`` profile.

The runner's own path (plan → execute) is used, so a notebook that passes here passes in ``make run``:
same parameters, same kernel, same time limit, same verdict sidecar.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from workbook import runner
from workbook.runner import catalog, profiles

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = catalog.discover(ROOT / "notebooks")
CASES = [(info, mode) for info in NOTEBOOKS for mode in info.modes]


def test_every_notebook_is_collected() -> None:
    """Guard against a notebook silently disappearing from the parametrisation."""
    found = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    assert found == sorted(i.path.relative_to(ROOT).as_posix() for i in NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(("info", "mode"), CASES, ids=[f"{i.id}-{m}" for i, m in CASES])
def test_notebook(info: catalog.NotebookInfo, mode: str, tmp_path: Path) -> None:
    jobs, skipped = runner.plan([info], [info.id], mode, profiles.load("ci"), 1, None)
    assert len(jobs) == 1 and not skipped
    row = runner.execute(jobs[0], tmp_path, threading.Event(), render=False)
    failure = row.get("failure") or {}
    log = tmp_path / row["paths"]["log"]
    log_tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
    assert row["verdict"] == "pass", (
        f"{info.id} ({mode}): {row['verdict']}: {row['message']}\n"
        f"failing cell:\n{failure.get('source', '')}\n{failure.get('error', '')}\nlog:\n{log_tail}")
    assert row["reproduced"] is (mode == "incident")
    assert not row["reaped"], f"the notebook left processes behind: {row['reaped']}"
