"""The runner: ``workbook run`` / ``list`` / ``up`` / ``down`` and what they need (catalogue, profiles,
papermill execution, summaries). Notebooks never import this package; the CLI and the tests do.
"""

from workbook.runner.execution import Job, cmd_list, cmd_run, default_output, execute, plan, write_summaries

__all__ = ["Job", "cmd_list", "cmd_run", "default_output", "execute", "plan", "write_summaries"]
