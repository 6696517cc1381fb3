"""The runner: ``workbook run`` / ``list`` / ``new`` / ``report merge`` / ``up`` / ``down`` and what they need
(catalogue, profiles, papermill execution, shards, the report: summaries, JUnit, site and pages).
Notebooks never import this package; the CLI and the tests do.
"""

from workbook.runner.execution import (
    Job,
    cmd_list,
    cmd_run,
    default_output,
    execute,
    plan,
    select_shard,
)
from workbook.runner.report import write_report
from workbook.runner.summaries import write_summaries

__all__ = ["Job", "cmd_list", "cmd_run", "default_output", "execute", "plan", "select_shard", "write_report",
           "write_summaries"]
