"""``junit.xml``: one testcase per execution, for the test-results view of any CI (built with junitparser).

classname is the notebook's family, name is ``<id>[<mode>]``. A verdict that does not hold is a
failure (message: the verdict message; text: the failing cell and its error). A timeout, a dead kernel,
an interruption or a notebook that never reached its verdict is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from workbook.runner import shard

JUNIT = "junit.xml"


def _cell_text(row: Mapping[str, Any]) -> str:
    failure = row.get("failure") or {}
    if not failure:
        return row.get("message", "")
    return f"cell {failure['cell']}:\n{failure['source']}\n\n{failure['error']}"


def testcase(row: Mapping[str, Any]) -> TestCase:
    """The testcase of one summary row."""
    case = TestCase(shard.unit(row["id"], row["mode"]), row.get("family", "general"), row["duration"])
    if row["verdict"] != "pass":
        # the verdict does not hold: a failure; anything that kept the notebook from its verdict: an error
        fail = row["verdict"] == "fail"
        result = Failure(row["message"], "VerdictError") if fail else Error(row["message"], row["verdict"])
        result.text = _cell_text(row)
        case.result = [result]
    page = row["paths"].get("html") or row["paths"].get("notebook") or ""
    case.system_out = f"repeat {row['repeat']}; page {page}; log {row['paths'].get('log', '')}"
    return case


def write(out: Path, doc: Mapping[str, Any]) -> Path:
    """``junit.xml`` in *out* for the run summary *doc* (always written, even with no execution)."""
    suite = TestSuite(f"workbook {doc['profile']}")
    for row in doc["results"]:
        suite.add_testcase(testcase(row))
    suite.update_statistics()
    xml = JUnitXml("workbook")
    xml.add_testsuite(suite)
    xml.update_statistics()
    path = out / JUNIT
    xml.write(str(path), pretty=True)
    return path
