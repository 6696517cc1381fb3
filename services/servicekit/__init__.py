"""What every service of the workbook shares: the ready-file contract, JSON-lines logs, defect switches
and a command line whose errors fit on one line.

Services import this package, never ``workbook``. See ``docs/contracts.md``.
"""

from servicekit.cli import ArgumentParser, parse_hostport
from servicekit.defects import add_defect_argument, announce_defects
from servicekit.logs import JsonLogger, configure_logging
from servicekit.ready import write_ready_file

__all__ = [
    "ArgumentParser",
    "JsonLogger",
    "add_defect_argument",
    "announce_defects",
    "configure_logging",
    "parse_hostport",
    "write_ready_file",
]
