"""The CI examples: the GitHub workflow and the GitLab snippet in docs/notebooks.md are valid YAML, shard
the suite, merge and publish, and every ``workbook`` command in them parses with the real CLI parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from workbook.runner import cli

ROOT = Path(__file__).resolve().parents[2]
# what the shells would substitute, with sample values
SAMPLES = {r"\$\{\{\s*matrix\.shard\s*\}\}": "2", r"\$SHARDS\b": "3", r"\$PROFILE\b|\"\$PROFILE\"": "ci",
           r'"\$\{durations\[@\]\}"': "--durations durations.json", r"\$CI_NODE_INDEX\b": "2",
           r"\$CI_NODE_TOTAL\b": "3", r"\$DURATIONS\b": "--durations durations.json"}


def workbook_commands(scripts: list[str]) -> list[list[str]]:
    """Every ``.venv/bin/workbook`` invocation in *scripts*, continuation lines joined, samples put in."""
    found = []
    for script in scripts:
        for line in script.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line.startswith(".venv/bin/workbook "):
                continue
            line = line.split(" || ")[0]
            for pattern, value in SAMPLES.items():
                line = re.sub(pattern, value, line)
            assert "$" not in line, f"unsubstituted variable in {line!r}"
            found.append(shlex.split(line)[1:])
    return found


def assert_parses(argv: list[str]) -> Any:
    args = cli._parser().parse_args(argv)  # SystemExit(2) with one line if a flag is wrong
    if args.command == "run" and args.shard:
        from workbook.runner import shard

        shard.parse(args.shard)
    return args


def test_the_github_workflow_shards_merges_and_publishes() -> None:
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "workbook.yml").read_text())
    jobs = doc["jobs"]
    shards = jobs["run"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, int(doc["env"]["SHARDS"]) + 1))
    assert jobs["report"]["needs"] == "run" and jobs["publish"]["needs"] == "report"
    uses = {job: [s.get("uses", "").split("@")[0] for s in jobs[job]["steps"]] for job in jobs}
    assert "actions/upload-artifact" in uses["run"] and "actions/download-artifact" in uses["report"]
    assert "actions/upload-pages-artifact" in uses["report"] and uses["publish"] == ["actions/deploy-pages"]
    scripts = [s["run"] for job in jobs.values() for s in job["steps"] if "run" in s]
    commands = [assert_parses(argv) for argv in workbook_commands(scripts)]
    assert [c.command for c in commands] == ["run", "report"]
    assert commands[0].shard == "2/3" and commands[0].durations == Path("durations.json")
    assert commands[1].report_command == "merge"


def test_the_gitlab_example_shards_merges_and_publishes() -> None:
    text = (ROOT / "docs" / "notebooks.md").read_text()
    [block] = re.findall(r"GitLab:\n\n```yaml\n(.*?)```", text, re.S)
    doc = yaml.safe_load(block)
    assert doc["workbook"]["parallel"] == 3 and doc["pages"]["stage"] == "report"
    assert doc["workbook"]["artifacts"]["reports"]["junit"] == "outputs/shard-*/junit.xml"
    assert doc["pages"]["artifacts"]["paths"] == ["public"]
    commands = [assert_parses(argv) for argv in workbook_commands(doc["workbook"]["script"]
                                                                  + doc["pages"]["script"])]
    assert [c.command for c in commands] == ["run", "report"]
    assert commands[0].shard == "2/3" and commands[1].output == Path("public")
