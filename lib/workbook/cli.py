"""``workbook``: list the notebooks, run them headless, reap what a dead kernel left (``down``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from workbook import registry


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbook", description="Notebooks that reproduce production incidents, run headless.")
    p.add_argument("--notebooks", type=Path, default=None,
                   help="notebook directory (default: $WORKBOOK_NOTEBOOKS or the project's notebooks/)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="id, title, source document and defect switches of every notebook")

    r = sub.add_parser("run", help="execute notebooks through papermill and summarise the verdicts")
    r.add_argument("ids", nargs="*", metavar="ID", help="notebook ids (default: all)")
    r.add_argument("--mode", choices=["fixed", "incident", "both"], default="both")
    r.add_argument("--profile", default="ci", help="profile name in parameters/ or a YAML path (default: ci)")
    r.add_argument("--jobs", type=int, default=1, help="notebooks executed in parallel (default: 1)")
    r.add_argument("--output", type=Path, default=None, help="output directory (default: outputs/<run-id>)")
    r.add_argument("--repeat", type=int, default=1, help="execute each (notebook, mode) N times")
    r.add_argument("--timeout", type=float, default=None,
                   help="whole-run time limit per notebook in seconds (default: the profile's)")
    r.add_argument("--no-html", action="store_true", help="skip rendering HTML pages")

    d = sub.add_parser("down", help="reap services and run directories whose owner has died")
    d.add_argument("--all", action="store_true", help="also runs whose owner is alive (stops them!)")

    sub.add_parser("up", help="start the whole topology for exploration (not yet implemented)")
    return p


def cmd_down(everything: bool) -> int:
    """Reap dead owners' runs (or all runs); prints one line per run reaped."""
    reports = registry.reap(everything=everything)
    for rep in reports:
        killed = ", ".join(f"{p['name']}[{p['pid']}]" for p in rep.killed) or "no live process"
        where = "removed" if rep.removed_dir else "kept"
        print(f"reaped {rep.run_id}: {killed}; {rep.run_dir} {where}")
    if not reports:
        print("nothing to reap")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``workbook`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "down":
        return cmd_down(args.all)
    if args.command == "up":
        sys.stderr.write("workbook: error: 'up' is not implemented yet (the whole-topology launcher "
                         "lands with the KV cluster and Ethereum stack)\n")
        return 2
    from workbook import profiles, runner

    notebooks_dir = args.notebooks or Path(os.environ.get("WORKBOOK_NOTEBOOKS", profiles.ROOT / "notebooks"))
    if args.command == "list":
        return runner.cmd_list(notebooks_dir)
    return runner.cmd_run(notebooks_dir, args)


if __name__ == "__main__":
    raise SystemExit(main())
