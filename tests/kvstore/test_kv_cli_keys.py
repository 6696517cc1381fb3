"""The CLI takes keys as bytes (raw argv bytes, or --key-hex); refusals are one line and exit 2, never a
traceback; exit 1 means "not found" and nothing else. A twin on a taken port says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from workbook.kvcluster import kv_health
from workbook.run import Run

KV = [sys.executable, "-m", "kvstore"]


def cli(*args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with argv given as bytes where needed (as a shell passes them)."""
    return subprocess.run([*KV, *args], capture_output=True, timeout=30)


def one_line(r: subprocess.CompletedProcess[bytes]) -> str:
    text = r.stderr.decode(errors="replace").strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    return text


async def test_a_key_that_is_not_utf8_is_stored_as_its_bytes(start_cluster) -> None:
    cluster = await start_cluster(1)
    target = cluster.address("kv1")
    raw = b"bad/\xff\xfe"
    put = cli("put", "--target", target, raw, b"v\xff")
    assert put.returncode == 0 and put.stdout.startswith(b"ok version="), put
    got = cli("get", "--target", target, raw)
    assert (got.returncode, got.stdout) == (0, b"v\xff\n")
    assert cluster.client("kv1").get(raw).value == b"v\xff"  # the same key, byte for byte
    by_hex = cli("get", "--target", target, "--key-hex", raw.hex())
    assert (by_hex.returncode, by_hex.stdout) == (0, b"v\xff\n")
    assert cli("put", "--target", target, "--key-hex", "00ff", "zero").returncode == 0
    assert cluster.client("kv1").get(b"\x00\xff").value == b"zero"
    assert cli("delete", "--target", target, "--key-hex", raw.hex()).returncode == 0
    missing = cli("get", "--target", target, raw)
    assert missing.returncode == 1 and "was deleted" in one_line(missing)


@pytest.mark.parametrize("args, message", [
    (["get", "--key-hex", "zz"], "expected hexadecimal bytes"),
    (["get", "--key-hex", "6b", "k"], "exactly one"),
    (["get"], "exactly one"),
    (["delete", "--key-hex", ""], "key must not be empty"),
    (["put", "--key-hex", "6b" * 512, "v"], "key is 512 bytes"),
])
async def test_key_refusals_are_one_line_and_exit_2(start_cluster, args: list[str], message: str) -> None:
    cluster = await start_cluster(1)
    r = cli(args[0], "--target", cluster.address("kv1"), *args[1:])
    assert r.returncode == 2 and message in one_line(r), r


def test_a_twin_on_a_taken_port_fails_with_one_clear_line(run: Run) -> None:
    first = run.start("kv1", ["kvstore", "serve", "--name", "kv1", "--data-dir", str(run.data_dir("kv1")),
                              "--listen", "127.0.0.1:0"], health=kv_health())
    r = subprocess.run([*KV, "serve", "--name", "twin", "--data-dir", str(run.data_dir("twin")),
                        "--listen", first.url("grpc")], capture_output=True, text=True, timeout=30,
                       env={**os.environ})
    assert r.returncode == 1
    assert "add_port" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("{")]  # the JSON log record aside
    assert len(lines) == 1 and f"address in use (held by pid {first.pid}" in lines[0], r.stderr
