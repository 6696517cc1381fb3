"""``workbook new ID --family kv|rpc|flaky --title "…"``: a notebook that follows the conventions and runs.

It writes ``notebooks/<family>/<id>-<slug>.ipynb`` on the library's public API (``from workbook import
...``): the metadata, the parameters cell, the check cell, the narrative headings, steps that start the
family's real services, drive a small workload recorded in a :class:`History` and judge it with a
checker, the timeline, and a verdict on what was observed. It adds the notebook's section to every
profile in ``parameters/``. The engineer then replaces the workload and the verdict with the incident's.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from workbook._exceptions import RunnerError
from workbook.runner import catalog, profiles

FAMILIES = ("kv", "rpc", "flaky")
_ID = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_KERNELSPEC = {"display_name": "Python 3 (workbook)", "language": "python", "name": "python3"}

_PARAMETERS = {
    "kv": '''mode = "fixed"            # "fixed" or "incident"
profile = "ci"
nodes = 3                 # kvstore nodes
writes = 200              # unique-key writes
writers = 4               # concurrent writer tasks
ready_timeout = 30
defects = None            # None: the switches of the mode; a list overrides them (try one at a time)
seed = 1''',
    "eth": '''mode = "fixed"            # "fixed" or "incident"
profile = "ci"
requests = 50             # JSON-RPC requests sent through the proxy
request_rate = 100        # requests per second (a global profile key)
block_time = 0.5          # seconds between blocks
ready_timeout = 15
defects = None            # None: the switches of the mode; a list overrides them (try one at a time)
seed = 1''',
}

_IMPORTS = {
    "kv": "from workbook import (History, KVCluster, Nemesis, Run, checkers, params, plots, verdict,\n"
          "                      workloads)",
    "eth": "from workbook import (EthStack, History, HttpClient, Nemesis, Run, checkers, params, plots,\n"
           "                      verdict, workloads)",
}

_START = {
    "kv": ("Step 1 — start the nodes",
           "Each `kvstore` node is its own process with its own LMDB directory; peers reach each other "
           "through the run's fault links. The table is every node's own report.",
           '''run = Run.create("{id}")
cluster = await KVCluster.start(run, nodes=nodes, defects=DEFECTS, ready_timeout=ready_timeout)
history = History()                      # every operation and every fault, on one clock
nemesis = Nemesis(history, kv=cluster)   # faults go through the nemesis, so they land in the history
pd.DataFrame(await cluster.status())'''),
    "eth": ("Step 1 — start the nodes and the proxy",
            "Two execution nodes (`elnode`, one chain) and the JSON-RPC proxy in front of them, each its "
            "own process behind the run's fault links.",
            '''run = Run.create("{id}")
stack = await EthStack.start(run, defects=DEFECTS, block_time=block_time, seed=seed,
                             ready_timeout=ready_timeout)
history = History()                      # every request and every fault, on one clock
nemesis = Nemesis(history, eth=stack)    # faults go through the nemesis, so they land in the history
pd.DataFrame([{{"service": name, "url": stack.node_url(name)}} for name in stack.nodes]
             + [{{"service": "rpcproxy", "url": stack.proxy_http_url}}])'''),
}

_WORKLOAD = {
    "kv": ("Step 2 — write, then read everything back",
           "`writers` tasks put `writes` unique keys; then every attempted key is read back from every "
           "node. The checker counts an acknowledged write as lost only if no node has it.",
           '''await workloads.write_unique(cluster, history, nodes=cluster.names, prefix="w", count=writes,
                             concurrency=writers)
attempted = sorted({op["key"] for op in history.operations(f="write")})
present = await workloads.present_anywhere(cluster, attempted)
check = checkers.set_full(history, present, prefix="w")
pd.DataFrame([{k: v for k, v in check.items() if not isinstance(v, list)}])'''),
    "eth": ("Step 2 — requests through the proxy",
            "`requests` `eth_blockNumber` calls at `request_rate` per second, each recorded in the "
            "history with its outcome; the table counts the outcomes and compares the latency of the "
            "first and the second half (`checkers.latency`).",
            '''async with HttpClient(stack.proxy_http_url, history=history) as client:
    sent = await workloads.request_stream(client, "eth_blockNumber", rate=request_rate, count=requests)
counts = history.counts(f="eth_blockNumber")
ops = history.operations(f="eth_blockNumber")
latency = checkers.latency(history, split=ops[len(ops) // 2]["invoke_time"], f="eth_blockNumber")
pd.DataFrame([{"sent": sent, **counts, "p99 first half (s)": latency["p99_before"],
               "p99 second half (s)": latency["p99_after"]}])'''),
}

_VERDICT = {
    "kv": '''await cluster.aclose()
history.save(run.path("history.jsonl"))
run.close()
verdict.conclude(
    symptom=check["lost_count"] > 0,
    symptom_text="acknowledged writes missing when read back",
    invariant=check["valid"] and check["acknowledged"] > 0,
    invariant_text="every acknowledged write is present (and at least one was acknowledged)",
    figures={"attempted": check["attempted"], "acknowledged": check["acknowledged"],
             "lost": check["lost_count"]},
)''',
    "eth": '''history.save(run.path("history.jsonl"))
run.close()
verdict.conclude(
    symptom=counts["ok"] < sent,
    symptom_text="requests through the proxy without an answer",
    invariant=sent == requests and counts["ok"] == sent,
    invariant_text=f"all {requests} requests answered",
    figures={"sent": sent, "answered": counts["ok"], "failed": counts["fail"], "unknown": counts["info"]},
)''',
}


def slug(title: str) -> str:
    """``"Stale reads after a partition"`` → ``stale-reads-after-a-partition`` (at most six words)."""
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "-".join(words[:6]) or "notebook"


def notebook(nb_id: str, family: str, title: str, source: str) -> nbformat.NotebookNode:
    """The scaffolded notebook (not written)."""
    kind = "kv" if family == "kv" else "eth"
    start, work = _START[kind], _WORKLOAD[kind]
    cells = [
        new_markdown_cell(
            f"# {nb_id} · {title}\n\n**Source:** `{source}`: *quote the passage the incident comes from.*\n\n"
            "## What happened\nThe mechanism, in production terms: what the system did and why it looked "
            "fine.\n\n## What the on-call saw\nThe symptom as it reached people: errors, graphs, "
            "customer reports.\n\n## The defect switch\nNone yet: add the switch to the service, list it "
            "in `metadata.workbook.defects` and in `DEFECT_SWITCHES` below; until then the notebook runs in "
            "fixed mode only.\n\n## This notebook\nWhat each step does, and what each mode asserts."),
        new_code_cell(_PARAMETERS[kind], metadata={"tags": ["parameters"]}),
        new_code_cell(
            f"import pandas as pd\n\n{_IMPORTS[kind]}\n\nP = params.check(globals())\n"
            "DEFECT_SWITCHES = []      # the incident's switches (the same as metadata.workbook.defects)\n"
            "DEFECTS = (DEFECT_SWITCHES if P.incident else []) if defects is None else list(defects)\n"
            "print(f\"mode={mode}: defect switches {DEFECTS or 'off'}\")"),
        new_markdown_cell(f"## {start[0]}\n{start[1]}"),
        new_code_cell(start[2].format(id=nb_id)),
        new_markdown_cell(f"## {work[0]}\n{work[1]}"),
        new_code_cell(work[2]),
        new_markdown_cell("## Step 3 — the whole history on one time axis\nOne lane per client process, one "
                          "bar per operation from invoke to completion, coloured by outcome; faults of the "
                          "nemesis are bands across every lane."),
        new_code_cell(f'plots.timeline(history, title="{nb_id}")'),
        new_markdown_cell("## Verdict\nIncident mode: the symptom must be observed. Fixed mode: the "
                          "invariant must hold."),
        new_code_cell(_VERDICT[kind]),
        new_markdown_cell("## What to try\n- Change the load in the parameters cell and run again.\n"
                          "- Run it in both modes: `workbook run " + nb_id + " --mode both`."),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(_KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["workbook"] = {"id": nb_id, "title": title, "source": source, "defects": []}
    for n, cell in enumerate(nb.cells):
        cell["id"] = f"{nb_id}-{n:02d}"  # stable ids, as the committed notebooks have
    return nb


def add_profile_section(path: Path, nb_id: str, timeout: float) -> None:
    """Append ``notebooks.<nb_id>: {timeout: ...}`` to the profile at *path*, keeping its comments."""
    text = path.read_text()
    doc = yaml.safe_load(text) or {}
    if nb_id in (doc.get("notebooks") or {}):
        return
    base = text.rstrip("\n") + ("" if "notebooks" in doc else "\n\nnotebooks:")
    added = base + f"\n  {nb_id}:\n    timeout: {timeout:g}\n"
    if (yaml.safe_load(added).get("notebooks") or {}).get(nb_id) != {"timeout": timeout}:
        raise RunnerError(f"{path}: cannot append a section for {nb_id}: put `notebooks:` last in the file")
    path.write_text(added)


def create(notebooks_dir: Path, nb_id: str, *, family: str, title: str, source: str) -> Path:
    """Write the notebook and its profile sections; RunnerError (nothing written) on bad input."""
    if not _ID.fullmatch(nb_id):
        raise RunnerError(f"notebook id {nb_id!r} must be kebab-case (e.g. kv-08)")
    if family not in FAMILIES:
        raise RunnerError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not title.strip():
        raise RunnerError("--title must not be empty")
    existing = {i.id: i for i in catalog.discover(notebooks_dir)} if notebooks_dir.is_dir() else {}
    if nb_id in existing:
        raise RunnerError(f"notebook id {nb_id!r} already exists: {existing[nb_id].path}")
    path = notebooks_dir / family / f"{nb_id}-{slug(title)}.ipynb"
    if path.exists():
        raise RunnerError(f"{path} already exists")
    profile_dir = profiles.resolve("ci").parent
    loaded = [profiles.load(p) for p in sorted(profile_dir.glob("*.yaml"))]  # a broken one stops us here
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook(nb_id, family, title.strip(), source), str(path))
    for profile in loaded:  # ci: a notebook's usual limit; the others: the profile's own
        limit = 120 if profile.name == "ci" else float(profile.values.get("timeout", 1800))
        add_profile_section(profile.path, nb_id, limit)
    return path


def cmd_new(notebooks_dir: Path, nb_id: str, *, family: str, title: str, source: str) -> int:
    """``workbook new``: 0 and the paths written, or 2 and one line."""
    try:
        path = create(notebooks_dir, nb_id, family=family, title=title, source=source)
    except RunnerError as exc:
        sys.stderr.write(f"workbook: error: {exc}\n")
        return 2
    print(f"created {path}")
    print(f"added notebooks.{nb_id} to the profiles in {profiles.resolve('ci').parent}")
    print(f"next: workbook run {nb_id}; then write the incident into it (docs/notebooks.md)")
    return 0
