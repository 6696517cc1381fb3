"""workbook.ethstack: two elnodes of one chain behind fault links, and the proxy in front of them."""

from __future__ import annotations

import pytest
from workbook.ethstack import EthStack, proxy_config_toml, samples
from workbook.rpcclient import HttpClient, WsClient
from workbook.run import Run


async def _head(url: str) -> tuple[int, str]:
    async with HttpClient(url) as client:
        block = await client.request("eth_getBlockByNumber", ["latest", False])
    return int(block["number"], 16), block["hash"]


async def test_nodes_of_one_chain_behind_links_that_follow_restarts(run: Run) -> None:
    stack = await EthStack.start(run, with_proxy=False, block_time=0.2)
    number, block_hash = await _head(stack.node_url("el1"))
    async with HttpClient(stack.node_url("el2")) as el2:
        assert (await el2.request("eth_getBlockByNumber", [hex(number), False]))["hash"] == block_hash
    through_link = f"http://{stack.link('el1').address}/"
    assert (await _head(through_link))[0] >= number
    await stack.admin("el2").set(lag_blocks=4)
    assert (await stack.admin("el2").get())["lag_blocks"] == 4
    stack.kill("el1")
    assert not stack.nodes["el1"].alive
    await stack.restart("el1")
    after, _ = await _head(through_link)  # same link address, restarted node behind it
    assert after >= number
    stack.pause("el2")
    assert stack.nodes["el2"].paused
    stack.resume("el2")
    assert (await _head(stack.node_url("el2")))[0] >= number - 4
    with pytest.raises(RuntimeError):
        stack.proxy_ws_url  # noqa: B018


def test_proxy_settings_are_checked_against_the_proxys_options() -> None:
    text = proxy_config_toml({"health_interval": 0.2, "unhealthy_after": 2, "deny_prefixes": ["admin_"]})
    assert text == 'health_interval = 0.2\nunhealthy_after = 2\ndeny_prefixes = ["admin_"]\n'
    with pytest.raises(ValueError, match="max_lag"):
        proxy_config_toml({"max_lag": 3})


async def test_the_proxy_serves_both_transports_and_reports(run: Run) -> None:
    stack = await EthStack.start(run, settings={"health_interval": 0.2}, block_time=0.2)
    async with HttpClient(stack.proxy_http_url) as http:
        assert await http.request("eth_chainId") == "0x539"
    async with await WsClient.connect(stack.proxy_ws_url, "strict") as ws:
        sub = await ws.subscribe("newHeads")
        await ws.wait_notifications(sub, 2)
        assert await ws.request("eth_blockNumber")
        assert not ws.protocol_errors
    status = await stack.status()
    assert {n["name"] for n in status["nodes"]} == {"el1", "el2"}
    families = await stack.metrics()
    assert families and samples(families, "rpcproxy_upstream_healthy", upstream="el1")
    logs = stack.logs()
    assert {"el1", "el2", "proxy"} <= set(logs["name"])
    assert logs["ts"].is_monotonic_increasing
