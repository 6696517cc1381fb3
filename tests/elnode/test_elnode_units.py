"""Unit tests of elnode's pure parts: the deterministic chain, the fault knobs, JSON-RPC envelopes."""

from __future__ import annotations

import pytest
from elnode import rpc
from elnode.chain import EMPTY_UNCLES_HASH, TRANSFER_TOPIC, Chain, ChainSpec
from elnode.faults import FaultError, Faults
from elnode.filters import log_filter
from elnode.node import Node

SPEC = ChainSpec(chain_id=1337, seed=7, genesis_time=1_700_000_000, block_time=0.5)


def test_two_chain_instances_agree_on_every_block() -> None:
    a, b = Chain(SPEC), Chain(SPEC)
    for number in (0, 1, 2, 1000, 123_456_789):
        assert a.block_json(number, True) == b.block_json(number, True)


def test_a_different_seed_is_a_different_chain() -> None:
    other = Chain(ChainSpec(1337, 8, SPEC.genesis_time, SPEC.block_time))
    assert Chain(SPEC).block_hash(5) != other.block_hash(5)


def test_blocks_link_to_their_parents_and_carry_the_newheads_fields() -> None:
    chain = Chain(SPEC)
    header = chain.header(42)
    assert header["parentHash"] == chain.block_hash(41)
    assert header["hash"] == chain.block_hash(42)
    assert header["sha3Uncles"] == EMPTY_UNCLES_HASH
    assert len(bytes.fromhex(header["logsBloom"][2:])) == 256
    for name in ("parentHash", "stateRoot", "transactionsRoot", "receiptsRoot", "mixHash", "hash",
                 "withdrawalsRoot", "parentBeaconBlockRoot"):
        assert len(bytes.fromhex(header[name][2:])) == 32, name
    for name in ("difficulty", "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas", "blobGasUsed",
                 "excessBlobGas"):
        int(header[name], 16)
    assert int(header["timestamp"], 16) == int(SPEC.genesis_time + 42 * SPEC.block_time)


def test_head_follows_the_clock_and_never_goes_below_genesis() -> None:
    chain = Chain(SPEC)
    assert chain.clock_head(SPEC.genesis_time - 100) == 0
    assert chain.clock_head(SPEC.genesis_time + 10.0) == 20
    assert chain.clock_head(SPEC.genesis_time + 10.49) == 20


def test_every_block_after_genesis_has_transactions_and_matching_logs() -> None:
    chain = Chain(SPEC)
    for number in range(1, 50):
        block = chain.block(number)
        assert 1 <= len(block["transactions"]) <= 3
        assert [log["transactionHash"] for log in block["logs"]] == chain.transaction_hashes(number)
        assert all(log["address"] in chain.contracts for log in block["logs"])


def test_log_filter_matches_address_and_topic_positions() -> None:
    chain = Chain(SPEC)
    logs = [log for n in range(1, 200) for log in chain.logs(n)]
    transfers = [log for log in logs if log_filter({"topics": [TRANSFER_TOPIC]}).matches(log)]
    assert transfers and all(log["topics"][0] == TRANSFER_TOPIC for log in transfers)
    assert len(transfers) < len(logs)
    one = chain.contracts[0]
    upper = log_filter({"address": one.upper().replace("0X", "0x")})
    by_address = [log for log in logs if upper.matches(log)]
    assert by_address and all(log["address"] == one for log in by_address)
    sender_topic = logs[0]["topics"][1]
    assert all(log["topics"][1] == sender_topic for log in logs
               if log_filter({"topics": [None, [sender_topic]]}).matches(log))


def test_a_stall_freezes_the_head_and_lag_reports_behind_the_clock() -> None:
    now = [SPEC.genesis_time + 100.0]
    node = Node(Chain(SPEC), name="n", clock=lambda: now[0])
    assert node.head() == 200
    node.set_faults({"stall": True})
    now[0] += 5
    assert node.head() == 200 and node.clock_head() == 210
    node.set_faults({"stall": False, "lag_blocks": 3})
    assert node.head() == 207
    assert node.syncing() == {"startingBlock": hex(207), "currentBlock": hex(207), "highestBlock": hex(210)}
    node.reset_faults()
    assert node.head() == 210 and node.syncing() is False


def test_fault_patches_merge_per_method_and_null_removes() -> None:
    faults = Faults()
    faults.apply({"delay": {"eth_blockNumber": 0.5, "*": 0.1}})
    faults.apply({"delay": {"eth_chainId": 1}})
    assert faults.delay == {"eth_blockNumber": 0.5, "*": 0.1, "eth_chainId": 1.0}
    assert faults.delay_for("eth_getLogs") == 0.1
    faults.apply({"delay": {"*": None}})
    assert faults.delay_for("eth_getLogs") == 0.0
    faults.apply({"delay": None})
    assert faults.delay == {}


def test_a_bad_patch_changes_nothing() -> None:
    faults = Faults()
    faults.apply({"lag_blocks": 2})
    for bad in ({"lag_blocks": -1}, {"stall": "yes"}, {"nope": 1}, {"delay": {"x": "slow"}},
                {"fail": {"x": {"fraction": 2}}}, {"heartbeat_interval": 0}, [1],
                {"lag_blocks": 5, "stall": 1}, {"slow_handshake": {"count": 1, "seconds": -1}},
                {"delay": {"x": float("nan")}}):
        with pytest.raises(FaultError):
            faults.apply(bad)
    assert faults.as_json() == {**Faults().as_json(), "lag_blocks": 2}


def test_failures_are_spread_evenly_without_randomness() -> None:
    faults = Faults()
    faults.apply({"fail": {"eth_call": {"code": -32005, "message": "busy", "fraction": 0.25}}})
    pattern = [faults.failure_for("eth_call") is not None for _ in range(12)]
    assert pattern == [False, False, False, True] * 3
    assert faults.failure_for("eth_chainId") is None


def test_slow_handshakes_are_counted_down() -> None:
    faults = Faults()
    faults.apply({"slow_handshake": {"count": 2, "seconds": 1.5}})
    assert [faults.take_handshake_delay() for _ in range(3)] == [1.5, 1.5, 0.0]
    assert faults.slow_handshake is None


@pytest.mark.parametrize(("body", "code"), [
    (b"\xff\xfe", rpc.PARSE_ERROR), (b"{", rpc.PARSE_ERROR), (b"NaN", rpc.PARSE_ERROR),
    (b"[" * 100_000, rpc.PARSE_ERROR), (b"9" * 5000, rpc.PARSE_ERROR),
])
def test_malformed_bodies_are_parse_errors(body: bytes, code: int) -> None:
    with pytest.raises(rpc.RpcError) as info:
        rpc.decode(body)
    assert info.value.code == code


@pytest.mark.parametrize("obj", [
    1, "x", None, {}, {"jsonrpc": "1.0", "method": "m", "id": 1}, {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "method": 5, "id": 1}, {"jsonrpc": "2.0", "method": "m", "id": [1]},
    {"jsonrpc": "2.0", "method": "m", "id": True}, {"jsonrpc": "2.0", "method": "m", "params": 3},
])
def test_invalid_requests(obj: object) -> None:
    with pytest.raises(rpc.RpcError) as info:
        rpc.validate(obj)
    assert info.value.code == rpc.INVALID_REQUEST


def test_a_request_without_id_is_a_notification() -> None:
    assert rpc.validate({"jsonrpc": "2.0", "method": "m"}).is_notification
    assert not rpc.validate({"jsonrpc": "2.0", "method": "m", "id": None}).is_notification
