"""The JSON-RPC methods served over both transports (subscriptions live with the WebSocket session)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from elnode import filters
from elnode.chain import GWEI
from elnode.node import Node

MAX_LOG_RANGE = 5000
CLIENT_VERSION = "elnode/v1.0.0/linux-amd64/python3.11"

Method = Callable[[Node, list[Any]], Any]


def _positional(params: list[Any] | dict[str, Any], maximum: int, minimum: int = 0) -> list[Any]:
    if not isinstance(params, list):
        raise filters.invalid("expected positional params (an array)")
    if not minimum <= len(params) <= maximum:
        want = f"{minimum}" if minimum == maximum else f"{minimum} to {maximum}"
        raise filters.invalid(f"expected {want} params, got {len(params)}")
    return params + [None] * (maximum - len(params))


def chain_id(node: Node, params: list[Any]) -> str:
    _positional(params, 0)
    return hex(node.chain.spec.chain_id)


def net_version(node: Node, params: list[Any]) -> str:
    _positional(params, 0)
    return str(node.chain.spec.chain_id)


def client_version(node: Node, params: list[Any]) -> str:
    _positional(params, 0)
    return CLIENT_VERSION


def block_number(node: Node, params: list[Any]) -> str:
    _positional(params, 0)
    return hex(node.head())


def syncing(node: Node, params: list[Any]) -> Any:
    _positional(params, 0)
    return node.syncing()


def gas_price(node: Node, params: list[Any]) -> str:
    _positional(params, 0)
    return hex(node.chain.base_fee(node.head()) + GWEI)


def get_block_by_number(node: Node, params: list[Any]) -> Any:
    tag, full = _positional(params, 2, 1)
    head = node.head()
    number = filters.block_number(tag, head)
    full = filters.flag(full, "full transactions flag") if full is not None else False
    return node.chain.block_json(number, full) if number <= head else None


def get_block_by_hash(node: Node, params: list[Any]) -> Any:
    wanted, full = _positional(params, 2, 1)
    number = node.chain.number_of_hash(filters.block_hash(wanted), node.head())
    full = filters.flag(full, "full transactions flag") if full is not None else False
    return None if number is None else node.chain.block_json(number, full)


def get_logs(node: Node, params: list[Any]) -> list[dict[str, Any]]:
    (spec,) = _positional(params, 1, 1)
    if not isinstance(spec, dict):
        raise filters.invalid("filter must be an object")
    flt = filters.log_filter(spec)
    head = node.head()
    if spec.get("blockHash") is not None:
        if "fromBlock" in spec or "toBlock" in spec:
            raise filters.invalid("cannot specify both blockHash and fromBlock/toBlock")
        number = node.chain.number_of_hash(filters.block_hash(spec["blockHash"]), head)
        if number is None:
            raise filters.invalid("unknown block")
        first = last = number
    else:
        first = filters.block_number(spec.get("fromBlock", "latest"), head)
        last = min(filters.block_number(spec.get("toBlock", "latest"), head), head)
        if first > last:
            return []
        if last - first >= MAX_LOG_RANGE:
            raise filters.invalid(f"block range too large (at most {MAX_LOG_RANGE} blocks)")
    return [dict(log) for n in range(first, last + 1) for log in node.chain.logs(n) if flt.matches(log)]


METHODS: dict[str, Method] = {
    "eth_chainId": chain_id,
    "net_version": net_version,
    "web3_clientVersion": client_version,
    "eth_blockNumber": block_number,
    "eth_syncing": syncing,
    "eth_gasPrice": gas_price,
    "eth_getBlockByNumber": get_block_by_number,
    "eth_getBlockByHash": get_block_by_hash,
    "eth_getLogs": get_logs,
}
SUBSCRIPTION_METHODS = ("eth_subscribe", "eth_unsubscribe")
