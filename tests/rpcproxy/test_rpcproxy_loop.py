"""The proxy's ``--loop``: it serves on uvloop and on asyncio, says which in its listening record, and a
loop it cannot have is one error line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp
import pytest
from rpcproxy.__main__ import loop_factory
from rpcproxy_support import start_stack, wait_until
from workbook.run import Run
from workbook.service import Service

CHAIN_ID = b'{"jsonrpc":"2.0","id":7,"method":"eth_chainId","params":[]}'


async def test_the_proxy_serves_a_request_on_either_loop_and_logs_which(run: Run) -> None:
    stack = await start_stack(run)
    proxies = {
        "uvloop": await stack.start_proxy(name="proxy-uvloop", loop="uvloop"),
        "asyncio": await stack.start_proxy(name="proxy-asyncio", loop="asyncio"),
        "auto": stack.proxy,  # uvloop is a dev dependency: auto picks it
    }
    async with aiohttp.ClientSession() as session:
        for svc in proxies.values():
            assert svc is not None
            headers = {"Content-Type": "application/json"}
            async with session.post(svc.url("http"), data=CHAIN_ID, headers=headers) as resp:
                assert resp.status == 200
                assert json.loads(await resp.read())["result"] == "0x539"
    for choice, svc in proxies.items():
        assert svc is not None
        await wait_until(lambda svc=svc: bool(_loops(svc)), 10, f"{svc.name} logged proxy.listening")
        assert _loops(svc) == ["asyncio" if choice == "asyncio" else "uvloop"], choice


def _loops(svc: Service) -> list[str]:
    """The loop named by each of *svc*'s listening records."""
    return [r.get("loop", "") for r in svc.logs() if r.get("event") == "proxy.listening"]


def _cli(*argv: str, block_uvloop: bool = False) -> subprocess.CompletedProcess[str]:
    prelude = "import sys; " + ("sys.modules['uvloop'] = None; " if block_uvloop else "")
    code = prelude + "from rpcproxy.__main__ import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "--primary", "el1=http://127.0.0.1:1/", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("argv", "block_uvloop", "says"),
    [
        (["--loop", "trio"], False, "invalid choice"),
        (["--loop", "uvloop"], True, "uvloop is not installed"),
    ],
)
def test_a_loop_it_cannot_have_is_one_error_line_and_exit_2(
    argv: list[str], block_uvloop: bool, says: str
) -> None:
    proc = _cli(*argv, block_uvloop=block_uvloop)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rpcproxy: error:") and says in lines[0], proc.stderr


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") == ("asyncio", None)
    assert loop_factory("asyncio") == ("asyncio", None)
    with pytest.raises(ImportError):
        loop_factory("uvloop")
