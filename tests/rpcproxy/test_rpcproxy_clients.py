"""Real clients through the proxy: web3.py 8 keeps its newHeads subscription and its requests working
across a failover and a failback, in front of elnode and in front of two anvil nodes.

The failover is a real network fault: the proxy → primary link is cut (connections reset, new ones
refused), then healed.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from rpcproxy_support import FAST, start_stack, wait_sessions_on, wait_until
from web3 import AsyncWeb3, WebSocketProvider
from workbook.anvil import ensure_anvil, why_no_anvil
from workbook.ethstack import ProxyObserver, proxy_config_toml
from workbook.run import Run
from workbook.service import Service, http_health


async def _collect(w3: AsyncWeb3, sub_id: str, heads: list[Any], more: int, timeout: float = 20) -> None:  # noqa: ASYNC109
    """Read *more* newHeads notifications into *heads*; every one must carry the id web3 holds."""
    target = len(heads) + more
    async with asyncio.timeout(timeout):
        async for message in w3.socket.process_subscriptions():
            assert message["subscription"] == sub_id
            heads.append(message["result"])
            if len(heads) >= target:
                return


async def _failover_and_failback(
    w3: AsyncWeb3, stack_like: Any, primary: str, backup: str, cut: Any, heal: Any
) -> list[Any]:
    sub_id = await w3.eth.subscribe("newHeads")
    heads: list[Any] = []
    await _collect(w3, sub_id, heads, 2)
    await wait_sessions_on(stack_like, primary)
    cut()
    await wait_sessions_on(stack_like, backup)
    await _collect(w3, sub_id, heads, 2)
    assert await w3.eth.block_number > 0
    heal()
    await wait_sessions_on(stack_like, primary)
    await _collect(w3, sub_id, heads, 2)
    assert await w3.eth.block_number > 0
    assert await w3.eth.unsubscribe(sub_id) is True
    return heads


async def test_web3_through_the_proxy_in_front_of_elnode(run: Run) -> None:
    stack = await start_stack(run)
    async with AsyncWeb3(WebSocketProvider(stack.proxy_ws_url)) as w3:
        assert await w3.eth.chain_id == 1337
        link = stack.link("el1")
        heads = await _failover_and_failback(w3, stack, "el1", "el2", link.cut, link.heal)
    numbers = [h["number"] for h in heads]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no head twice, no gap


# -- anvil ------------------------------------------------------------------------------------------


def _anvil_health(svc: Service) -> bool:
    """anvil writes no ready file: it is up once it prints its address (port 0 picks one)."""
    match = re.search(r"Listening on (\S+:\d+)", svc.output())
    if not match:
        return False
    svc.info.update(listen=match.group(1), http=f"http://{match.group(1)}/")
    return True


class _AnvilPair(ProxyObserver):
    """Two anvil nodes behind fault links and the proxy; observed like an EthStack."""

    def __init__(self, run: Run, proxy: Service, links: dict[str, Any]) -> None:
        self.run, self.proxy, self.links = run, proxy, links

    @property
    def proxy_http_url(self) -> str:
        return self.proxy.url("http")


@pytest.mark.anvil
async def test_web3_through_the_proxy_in_front_of_two_anvil_nodes(run: Run) -> None:
    anvil = await asyncio.to_thread(ensure_anvil)
    if anvil is None:
        pytest.skip(f"anvil unavailable: {why_no_anvil()}")
    nodes = {}
    for name in ("a1", "a2"):
        nodes[name] = await run.astart(
            name,
            [anvil, "--host", "127.0.0.1", "--port", "0", "--block-time", "1"],
            health=_anvil_health,
            ready_file=False,
            log_file=False,
        )
    links = {
        name: run.links.add(f"proxy->{name}", target=svc.address, between=("proxy", name))
        for name, svc in nodes.items()
    }
    config = run.path("rpcproxy.toml")
    # two independent chains: their heads differ by a block or so, never by thousands
    config.write_text(proxy_config_toml({**FAST, "max_lag_blocks": 1000}))
    proxy = await run.astart(
        "proxy",
        [
            "rpcproxy",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "proxy",
            "--config",
            str(config),
            "--primary",
            f"a1=http://{links['a1'].address}/",
            "--backup",
            f"a2=http://{links['a2'].address}/",
        ],
        health=http_health("/health"),
    )
    pair = _AnvilPair(run, proxy, links)

    async def both_healthy() -> bool:
        return all(n["healthy"] for n in (await pair.status())["nodes"])

    await wait_until(both_healthy, 15, "both anvil nodes healthy")
    async with AsyncWeb3(WebSocketProvider(proxy.url("ws"))) as w3:
        assert await w3.eth.chain_id == 31337
        heads = await _failover_and_failback(w3, pair, "a1", "a2", links["a1"].cut, links["a1"].heal)
    assert len(heads) >= 6
