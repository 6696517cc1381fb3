"""``workbook up``: the whole topology for exploration (three kvstore nodes, two elnodes, the proxy).

In the foreground it prints the endpoints and keeps everything up until Ctrl-C or SIGTERM. With
``--detach`` a background supervisor (its own session, not tied to the terminal) owns the run; its pid
and the endpoints are in ``up.json`` under the user's workbook directory, and ``workbook down`` stops it.
Either way the services die with their owner, so nothing outlives the topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workbook import registry
from workbook._exceptions import ConditionTimeout
from workbook.ethstack import EthStack
from workbook.kvcluster import KVCluster
from workbook.run import Run
from workbook.waiting import wait_until_sync


def state_path() -> Path:
    """Where a detached ``up`` records its pid and endpoints."""
    return registry.user_base() / "up.json"


def endpoints(run: Run, cluster: KVCluster, stack: EthStack) -> dict[str, Any]:
    """Name → what to connect to, for every process of the topology."""
    out: dict[str, Any] = {name: {"grpc": cluster.address(name), "pid": cluster[name].pid}
                           for name in cluster.names}
    for name, svc in stack.nodes.items():
        out[name] = {"http": svc.url("http"), "ws": svc.url("ws"), "pid": svc.pid,
                     "admin": svc.url("http").rstrip("/") + "/admin/faults"}
    assert stack.proxy is not None
    http = stack.proxy_http_url.rstrip("/")
    out["proxy"] = {"http": http + "/", "ws": stack.proxy_ws_url, "status": http + "/status",
                    "metrics": http + "/metrics", "pid": stack.proxy.pid}
    return out


def describe(doc: dict[str, Any]) -> str:
    """The endpoints as the lines ``workbook up`` prints."""
    lines = [f"workbook up: run directory {doc['run_dir']} (supervisor pid {doc['pid']})"]
    for name, ends in doc["endpoints"].items():
        shown = "  ".join(f"{k}={v}" for k, v in ends.items() if k != "pid")
        lines.append(f"  {name:<6} {shown}")
    lines.append("stop with Ctrl-C (foreground) or `workbook down`")
    return "\n".join(lines)


async def serve(*, block_time: float, ready_timeout: float, on_ready: Any) -> None:
    """Start everything, call ``on_ready(doc)``, then hold until SIGINT/SIGTERM and close the run."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Run.create("up") as run:
        cluster = await KVCluster.start(run, nodes=3, ready_timeout=ready_timeout)
        stack = await EthStack.start(run, block_time=block_time, ready_timeout=ready_timeout,
                                     settings={"health_interval": 1.0})
        on_ready({"pid": os.getpid(), "run_dir": str(run.dir), "started_at": time.time(),
                  "endpoints": endpoints(run, cluster, stack)})
        await stop.wait()
        await cluster.aclose()


def _write_state(doc: dict[str, Any]) -> None:
    path = state_path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**doc, "start_time": registry.proc_start_time(os.getpid())}))
    os.replace(tmp, path)


def read_state() -> dict[str, Any] | None:
    """The detached ``up``'s record, if one is alive (a stale record is removed)."""
    path = state_path()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if registry.proc_start_time(doc.get("pid", -1)) != doc.get("start_time"):
        path.unlink(missing_ok=True)
        return None
    return doc


def stop_detached(grace: float = 20.0) -> dict[str, Any] | None:
    """SIGTERM the detached ``up`` and wait for it to close its run; returns its record, or None."""
    doc = read_state()
    if doc is None:
        return None
    pid = doc["pid"]
    os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(ConditionTimeout):
        wait_until_sync(lambda: registry.proc_start_time(pid) != doc["start_time"], grace, "up exits",
                        poll=0.05)
    if registry.proc_start_time(pid) == doc["start_time"]:
        os.kill(pid, signal.SIGKILL)  # its services follow it (PR_SET_PDEATHSIG)
    state_path().unlink(missing_ok=True)
    return doc


def cmd_up(*, detach: bool, block_time: float, ready_timeout: float) -> int:
    """``workbook up``: foreground until Ctrl-C, or hand the topology to a detached supervisor."""
    if read_state() is not None:
        sys.stderr.write(f"workbook: error: a detached topology is already up ({state_path()}); "
                         "`workbook down` stops it\n")
        return 2
    if not detach:
        asyncio.run(serve(block_time=block_time, ready_timeout=ready_timeout,
                          on_ready=lambda doc: print(describe(doc), flush=True)))
        return 0
    log = registry.user_base() / "up.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # not through the death-signal launcher: it must outlive this command
            [sys.executable, "-m", "workbook.runner.up", "--serve", str(block_time), str(ready_timeout)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 3 * ready_timeout
    while (doc := read_state()) is None or doc["pid"] != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            sys.stderr.write(f"workbook: error: the topology did not come up (exit {proc.returncode}); "
                             f"{log}: {' | '.join(tail)}\n")
            return 1
        time.sleep(0.05)
    print(describe(doc))
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    asyncio.run(serve(block_time=float(sys.argv[2]), ready_timeout=float(sys.argv[3]), on_ready=_write_state))
