"""``workbook``: list, run and scaffold (``new``) the notebooks, merge sharded reports (``report merge``),
bring the topology ``up``, reap what is left (``down``)."""

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
    r.add_argument("--repeat", type=int, default=None,
                   help="execute each (notebook, mode) N times (default: the profile's repeat, else 1)")
    r.add_argument("--timeout", type=float, default=None,
                   help="whole-run time limit per notebook in seconds (default: the profile's)")
    r.add_argument("--no-html", action="store_true", help="skip rendering the per-notebook HTML pages")
    r.add_argument("--shard", default=None, metavar="K/N",
                   help="run only the K-th of N disjoint parts of the (notebook, mode) executions")
    r.add_argument("--durations", type=Path, default=None, metavar="FILE",
                   help="durations.json of an earlier run: balances --shard by time (default: by count)")

    rep = sub.add_parser("report", help="work on run outputs")
    rsub = rep.add_subparsers(dest="report_command", required=True, parser_class=_Parser)
    m = rsub.add_parser("merge", help="merge the outputs of the shards of one run into one report")
    m.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="each shard's output directory")
    m.add_argument("--output", type=Path, required=True, help="the merged output directory")

    n = sub.add_parser("new", help="scaffold a notebook that passes the conventions and runs as it is")
    n.add_argument("id", metavar="ID", help="kebab-case id, e.g. kv-08")
    n.add_argument("--family", required=True, choices=["kv", "rpc", "flaky"])
    n.add_argument("--title", required=True, help="one line: what goes wrong")
    n.add_argument("--source", default="shared/incidents.md",
                   help="the document the incident comes from (default: shared/incidents.md)")

    d = sub.add_parser("down", help="reap services and run directories whose owner has died")
    d.add_argument("--all", action="store_true", help="also runs whose owner is alive (stops them!)")

    u = sub.add_parser("up", help="start the whole topology for exploration and print its endpoints")
    u.add_argument("--detach", action="store_true",
                   help="leave it running in the background (stop it with `workbook down`)")
    u.add_argument("--block-time", type=float, default=1.0, help="seconds between blocks (default: 1)")
    u.add_argument("--ready-timeout", type=float, default=30.0, help="seconds each service may take")
    return p


def cmd_down(everything: bool) -> int:
    """Stop a detached ``workbook up``, reap dead owners' runs (or all runs); one line per run."""
    from workbook.runner import up

    detached = up.stop_detached()
    if detached is not None:
        print(f"stopped the detached topology (supervisor pid {detached['pid']}, {detached['run_dir']})")
    reports = registry.reap(everything=everything)
    for rep in reports:
        killed = ", ".join(f"{p['name']}[{p['pid']}]" for p in rep.killed) or "no live process"
        where = "removed" if rep.removed_dir else "kept"
        print(f"reaped {rep.run_id}: {killed}; {rep.run_dir} {where}")
    if not reports and detached is None:
        print("nothing to reap")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``workbook`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "down":
        return cmd_down(args.all)
    if args.command == "up":
        from workbook.runner import up

        return up.cmd_up(detach=args.detach, block_time=args.block_time, ready_timeout=args.ready_timeout)
    from workbook import runner
    from workbook.runner import profiles

    notebooks_dir = args.notebooks or Path(os.environ.get("WORKBOOK_NOTEBOOKS", profiles.ROOT / "notebooks"))
    if args.command == "list":
        return runner.cmd_list(notebooks_dir)
    if args.command == "report":
        from workbook.runner import merge

        return merge.cmd_merge(args.dirs, args.output)
    if args.command == "new":
        from workbook.runner import scaffold

        return scaffold.cmd_new(notebooks_dir, args.id, family=args.family, title=args.title,
                                source=args.source)
    return runner.cmd_run(notebooks_dir, args)


if __name__ == "__main__":
    raise SystemExit(main())
