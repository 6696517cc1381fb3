"""Bad input gets a clear error, loses nothing, and never takes the node down."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from kvstore.client import InvalidArgument, KeyNotFound, KVClient, KVError, StorageFull
from kvstore.clock import Stamp
from workbook._exceptions import ServiceError
from workbook.kvcluster import kv_health
from workbook.run import Run

KV = [sys.executable, "-m", "kvstore"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KV, *args], capture_output=True, text=True, timeout=30)


async def test_invalid_keys_and_values_are_refused_and_nothing_is_lost(start_cluster) -> None:
    cluster = await start_cluster(1, extra_args=["--max-value-bytes", "1000"])
    c = cluster.client("kv1")
    c.put("keep", "safe")
    with pytest.raises(InvalidArgument, match="key must not be empty"):
        c.put("", "x")
    with pytest.raises(InvalidArgument, match="key is 512 bytes; the limit is 511"):
        c.put(b"k" * 512, "x")
    with pytest.raises(InvalidArgument, match="key is 600 bytes"):
        c.get(b"k" * 600)
    with pytest.raises(InvalidArgument, match="key must not be empty"):
        c.delete("")
    with pytest.raises(InvalidArgument, match="value is 1001 bytes; the limit is 1000"):
        c.put("big", b"v" * 1001)
    c.put(b"k" * 511, b"v" * 1000)  # both limits are inclusive
    assert c.get(b"k" * 511).value == b"v" * 1000
    assert c.get("keep").value == b"safe"
    with pytest.raises(KeyNotFound):
        c.get("big")
    assert cluster["kv1"].alive


async def test_a_full_map_is_resource_exhausted_and_the_node_keeps_serving(start_cluster) -> None:
    cluster = await start_cluster(1, extra_args=["--map-size", str(512 * 1024), "--max-value-bytes", "65536"])
    c = cluster.client("kv1")
    written = []
    with pytest.raises(StorageFull, match=r"storage map is full .*raise --map-size"):
        for i in range(64):  # 64 x 2 x 32 KiB (log + data) cannot fit in 512 KiB
            c.put(f"k{i}", bytes([i % 256]) * 32768)
            written.append(i)
    assert written, "not even one value fitted"
    for i in written:  # every acknowledged write is still there, and the node still answers
        assert c.get(f"k{i}").value == bytes([i % 256]) * 32768
    assert cluster["kv1"].alive and c.health() == "SERVING"


async def test_a_version_too_far_ahead_is_refused(start_cluster) -> None:
    cluster = await start_cluster(1)
    c = cluster.client("kv1")
    c.seen = Stamp(int((time.time() + 60) * 1000), 0, "elsewhere")
    with pytest.raises(KVError) as err:
        c.put("k", "v")
    assert err.value.code == "FAILED_PRECONDITION"
    assert "ahead of this node's clock" in err.value.details
    c.seen = Stamp(int((time.time() + 2) * 1000), 0, "elsewhere")  # within the allowed drift: moved past
    ahead = c.seen
    w = c.put("k", "v")
    assert w.version > ahead  # the node moved its clock past the client's version


def test_clock_offset_exists_only_with_fault_injection(run: Run) -> None:
    svc = run.start("kv1", ["kvstore", "serve", "--name", "kv1", "--data-dir", str(run.data_dir("kv1")),
                            "--listen", "127.0.0.1:0"], health=kv_health())
    with KVClient(svc.url("grpc")) as c:
        with pytest.raises(KVError) as err:
            c.set_clock_offset(-5)
        assert err.value.code == "UNIMPLEMENTED"
        assert c.status()["clock_offset_s"] == 0.0


def test_second_node_on_the_same_data_directory_fails_at_once_naming_the_holder(run: Run) -> None:
    argv = ["kvstore", "serve", "--name", "kv1", "--data-dir", str(run.data_dir("kv1")),
            "--listen", "127.0.0.1:0"]
    first = run.start("kv1", argv, health=kv_health())
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match=rf"exited with code 1.*locked by pid {first.pid} \(kv1\)"):
        run.start("kv1b", [*argv[:3], "kv1b", *argv[4:]], health=kv_health())
    assert time.monotonic() - t0 < 10
    assert first.alive


async def test_cli_exit_codes_and_messages(start_cluster, run: Run) -> None:
    cluster = await start_cluster(1)
    target = cluster.address("kv1")
    put = cli("put", "--target", target, "greeting", "hello")
    assert put.returncode == 0 and put.stdout.startswith("ok version=")
    got = cli("get", "--target", target, "greeting")
    assert (got.returncode, got.stdout) == (0, "hello\n")
    missing = cli("get", "--target", target, "nope")
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = cli("put", "--target", target, "", "x")
    assert bad.returncode == 2 and "INVALID_ARGUMENT: key must not be empty" in bad.stderr
    dead = run.links.add("dead", target=target)
    dead.cut()
    down = cli("get", "--target", dead.address, "greeting", "--timeout", "2")
    assert down.returncode >= 2 and "UNAVAILABLE" in down.stderr
    deleted = cli("delete", "--target", target, "greeting")
    assert deleted.returncode == 0
    assert cli("get", "--target", target, "greeting").returncode == 1
    status = cli("status", "--target", target)
    assert status.returncode == 0 and '"phase": "serving"' in status.stdout


SERVE = ["serve", "--name", "x", "--data-dir", "d"]


@pytest.mark.parametrize("args, message", [
    ([*SERVE, "--listen", "nope"], "expected HOST:PORT"),
    ([*SERVE, "--listen", ":0", "--peer", "bad"], "expected NAME=HOST:PORT"),
    ([*SERVE, "--listen", ":0", "--defect", "nope"], "invalid choice"),
    ([*SERVE, "--listen", ":0", "--write-quorum", "0"], "must be positive"),
    (["put", "--target", "127.0.0.1:1"], "required"),
])
def test_bad_command_lines_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    r = cli(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_help_lists_every_defect() -> None:
    text = re.sub(r"-\s+", "-", cli("serve", "--help").stdout)  # argparse wraps lines at hyphens
    for name in ("ack-before-commit", "ready-before-recovery", "async-replication", "no-catch-up",
                 "wall-clock-lww", "serve-before-catch-up", "shared-port"):
        assert name in text
