"""elnode's command line: --help documents every flag, mistakes are one line, SIGTERM is a clean stop."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest
from elnode.__main__ import build_parser
from workbook.service import Service


def _elnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "elnode", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def test_help_documents_every_flag() -> None:
    out = _elnode("--help")
    assert out.returncode == 0
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in out.stdout, flag
    assert all(action.help for action in build_parser()._actions)


@pytest.mark.parametrize("args", [["--block-time", "0"], ["--chain-id", "x"], ["--listen", "nowhere"],
                                  ["--bogus"], ["--seed", "1.5"], ["--max-message-size", "-1"],
                                  ["--block-time", "nan"], ["--genesis-time", "soon"]])
def test_a_bad_command_line_is_one_line_and_exit_2(args: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(args)
    assert info.value.code == 2
    assert re.fullmatch(r"elnode: error: .+\n", capsys.readouterr().err)


def test_the_installed_command_reports_a_bad_flag_in_one_line() -> None:
    out = _elnode("--block-time", "0")
    assert out.returncode == 2
    assert re.fullmatch(r"elnode: error: .+\n", out.stderr), out.stderr


def test_a_taken_address_is_one_line_and_exit_1() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = _elnode("--listen", f"127.0.0.1:{port}")
    assert out.returncode == 1
    assert re.fullmatch(rf"elnode: error: cannot serve on 127\.0\.0\.1:{port}: .+\n", out.stderr), out.stderr


def test_sigterm_stops_cleanly_and_the_ready_file_names_the_endpoints(node: Service) -> None:
    assert node.info["service"] == "elnode" and node.info["pid"] == node.pid
    assert node.info["http"] == f"http://{node.address}/" and node.info["ws"] == f"ws://{node.address}/"
    assert node.stop(grace=5) == 0
    events = [r["event"] for r in node.logs()]
    assert events[0] == "started" and events[-2:] == ["stopping", "stopped"]
