"""Unit tests of the proxy's tables, health state machine, configuration and method policy (no I/O)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rpcproxy.config import OPTIONS, ConfigError, ProxyConfig, build_config, derive_ws_url, parse_upstream
from rpcproxy.health import CheckResult, NodeHealth, judge_round
from rpcproxy.jsonrpc import MethodPolicy, decode, encode, request_problem
from rpcproxy.tables import PROXY_ID_PREFIX, HeadTracker, IdAllocator, PendingTable, SubscriptionTable

# -- ids and in-flight requests ----------------------------------------------------------------------------


def test_proxy_ids_are_unique_strings_that_cannot_collide_with_numeric_client_ids() -> None:
    ids = IdAllocator()
    seen = {ids.next() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(isinstance(i, str) and i.startswith(PROXY_ID_PREFIX) for i in seen)


def test_pending_table_keeps_client_ids_apart_even_when_the_client_reuses_them() -> None:
    table = PendingTable(IdAllocator())
    link_a, link_b = object(), object()
    first = table.add(
        client_id=7, method="eth_blockNumber", request={"id": 7}, kind="call", link=link_a, started=0
    )
    second = table.add(
        client_id=7, method="eth_chainId", request={"id": 7}, kind="call", link=link_a, started=0
    )
    third = table.add(client_id="x", method="eth_call", request={}, kind="call", link=link_b, started=0)
    assert first.proxy_id != second.proxy_id
    assert len(table) == 3
    assert table.pop(7) is None  # a client id is never a key
    assert table.pop(second.proxy_id) is second
    assert table.pop(second.proxy_id) is None  # answered once only
    assert table.take_link(link_a) == [first]
    assert list(table) == [third]


def test_pending_take_link_returns_requests_in_send_order() -> None:
    table = PendingTable(IdAllocator())
    link = object()
    made = [
        table.add(client_id=i, method="m", request={}, kind="call", link=link, started=0) for i in range(5)
    ]
    assert table.take_link(link) == made
    assert len(table) == 0


# -- subscriptions -----------------------------------------------------------------------------------------


def test_client_subscription_id_is_stable_across_links() -> None:
    subs = SubscriptionTable()
    old, new = object(), object()
    sub = subs.add(old, "0xaaa", ["newHeads"], request_id=100)
    assert sub.client_id == "0xaaa" and sub.heads is not None
    assert subs.client_id(old, "0xaaa") == "0xaaa"
    subs.bind(new, "0xbbb", sub.client_id)
    assert subs.client_id(new, "0xbbb") == "0xaaa"
    assert subs.upstream_id(new, "0xaaa") == "0xbbb"
    assert subs.client_id(new, "0xaaa") is None  # the old upstream id means nothing on the new link
    subs.forget_link(old)
    assert subs.client_id(old, "0xaaa") is None
    assert "0xaaa" in subs


def test_a_new_upstream_id_equal_to_a_held_client_id_gets_a_fresh_client_id() -> None:
    subs = SubscriptionTable()
    a, b = object(), object()
    first = subs.add(a, "0x1", ["newHeads"], 1)
    second = subs.add(b, "0x1", ["logs", {}], 2)
    assert first.client_id == "0x1" and second.client_id != "0x1"
    assert subs.client_id(b, "0x1") == second.client_id
    assert subs.client_id(a, "0x1") == "0x1"


def test_removing_a_subscription_unbinds_it_on_every_link() -> None:
    subs = SubscriptionTable()
    a, b = object(), object()
    sub = subs.add(a, "0x1", ["newHeads"], 1)
    subs.bind(b, "0x2", sub.client_id)
    assert subs.remove("0x1") is sub
    assert subs.client_id(a, "0x1") is None and subs.client_id(b, "0x2") is None
    assert subs.remove("0x1") is None
    assert len(subs) == 0


def test_non_string_ids_never_match() -> None:
    subs = SubscriptionTable()
    link = object()
    subs.add(link, "0x1", ["newHeads"], 1)
    assert subs.client_id(link, 1) is None
    assert subs.upstream_id(link, None) is None


# -- newHeads de-duplication and gaps ----------------------------------------------------------------------


def test_head_tracker_drops_blocks_already_delivered_and_finds_gaps() -> None:
    heads = HeadTracker()
    assert heads.plan(10, "0xa") == (True, range(0))
    heads.delivered(10, "0xa")
    assert heads.plan(10, "0xa") == (False, range(0))  # same block again (after a move)
    assert heads.plan(11, "0xb") == (True, range(0))
    heads.delivered(11, "0xb")
    assert heads.plan(15, "0xf") == (True, range(12, 15))
    assert heads.plan(11, "0xother") == (True, range(0))  # a reorg at a delivered height is news
    assert heads.plan(9, None) == (False, range(0))


# -- health state machine ----------------------------------------------------------------------------------


def _node(name: str = "el1", priority: int = 0, n: int = 3, m: int = 2) -> NodeHealth:
    spec = parse_upstream(f"{name}=http://127.0.0.1:1/", "primary", priority)
    return NodeHealth(spec, unhealthy_after=n, healthy_after=m)


def test_first_good_check_makes_a_fresh_node_healthy() -> None:
    node = _node()
    assert not node.healthy
    assert node.record(True, 1.0) is True
    assert node.healthy and node.healthy_since == 1.0


def test_unhealthy_after_n_consecutive_failures_only() -> None:
    node = _node(n=3)
    node.record(True, 0)
    assert node.record(False, 1, "x") is None
    assert node.record(False, 2, "x") is None
    assert node.record(True, 3) is None  # a success resets the count
    assert node.record(False, 4, "x") is None
    assert node.record(False, 5, "x") is None
    assert node.record(False, 6, "deadline") is False
    assert not node.healthy and node.last_error == "deadline" and node.consecutive_failures == 3


def test_healthy_again_only_after_m_consecutive_good_checks() -> None:
    node = _node(n=1, m=3)
    node.record(True, 0)
    node.record(False, 1, "x")
    assert not node.healthy
    assert node.record(True, 2) is None
    assert node.record(False, 3, "x") is None  # flapping: the good streak starts over
    assert node.record(True, 4) is None
    assert node.record(True, 5) is None
    assert node.record(True, 6) is True
    assert node.healthy_for(7.5) == pytest.approx(1.5)


def test_round_chain_head_is_the_highest_and_lag_above_limit_is_a_failure() -> None:
    a, b = _node("a", 0, n=1), _node("b", 1, n=1)
    results = {"a": CheckResult(100), "b": CheckResult(90)}
    head, changed = judge_round([a, b], results, max_lag=5, now=1.0)
    assert head == 100
    assert changed == {"a": True}
    assert a.healthy and not b.healthy
    assert b.lag == 10 and "lagging" in (b.last_error or "")
    head, changed = judge_round([a, b], {"a": CheckResult(None, "deadline"), "b": CheckResult(101)}, 5, 2.0)
    assert head == 101 and changed == {"a": False, "b": True}
    assert a.head == 100  # a failed check keeps the last known head


# -- configuration -----------------------------------------------------------------------------------------


def test_defaults_in_the_documented_table_match_the_config_object() -> None:
    defaults = ProxyConfig()
    for name, (_kind, default, _minimum, text) in OPTIONS.items():
        assert getattr(defaults, name) == default, name
        assert text
    assert set(OPTIONS) == {f.name for f in dataclasses.fields(ProxyConfig)} - {"upstreams"}


def test_upstream_parsing_derives_the_websocket_url() -> None:
    spec = parse_upstream("el1=http://127.0.0.1:8545/", "primary", 0)
    assert spec.ws_url == "ws://127.0.0.1:8545/"
    spec = parse_upstream("el2=https://node.example:443/rpc,ws=wss://node.example/ws", "backup", 1)
    assert spec.ws_url == "wss://node.example/ws" and spec.http_url == "https://node.example:443/rpc"
    assert derive_ws_url("http://h:1") == "ws://h:1/"


@pytest.mark.parametrize(
    ("primaries", "backups", "message"),
    [
        ([], [], "at least one --primary"),
        (["el1=http://127.0.0.1:1/"], ["el1=http://127.0.0.1:2/"], "duplicate upstream name 'el1'"),
        (["el1"], [], "expected NAME=URL"),
        (["el1=ftp://x/"], [], "not a http/https URL"),
        (["el1=http://h:99999/"], [], "bad port"),
        (["bad name=http://h:1/"], [], "name must be"),
        (["el1=http://h:1/,ws=http://h:1/"], [], "not a ws/wss URL"),
    ],
)
def test_bad_upstreams_are_one_clear_line(primaries: list[str], backups: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(primaries, backups)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"health_interval": 0}, "health_interval must be >= 0.01"),
        ({"unhealthy_after": 1.5}, "must be an integer"),
        ({"batch_limit": "10"}, "must be a number"),
        ({"check_timeout": True}, "must be a number"),
        ({"deny_prefixes": "admin_"}, "list of non-empty strings"),
        ({"no_such_key": 1}, "unknown key 'no_such_key'"),
        ({"max_lag_blocks": -1}, "must be >= 0"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ProxyConfig().apply(table)


def test_cli_errors_are_one_line_and_exit_2() -> None:
    # a private directory, not tmp_path: parallel pytest sessions on this machine share its base
    with tempfile.TemporaryDirectory(prefix="rpcproxy-cli-") as tmp:
        config = Path(tmp) / "bad.toml"
        config.write_text("health_interval = -1\n")
        _check_cli_errors(config)


def _check_cli_errors(config: Path) -> None:
    cases = [
        ["--primary", "el1=http://127.0.0.1:1/", "--backup", "el1=http://127.0.0.1:2/"],
        ["--primary", "el1=http://127.0.0.1:1/", "--config", str(config)],
        ["--primary", "el1=http://127.0.0.1:1/", "--config", str(config) + ".missing"],
        ["--primary", "el1=http://127.0.0.1:1/", "--defect", "no-such-defect"],
        ["--listen", "nowhere", "--primary", "el1=http://127.0.0.1:1/"],
    ]
    for argv in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "rpcproxy", *argv], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2, (argv, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rpcproxy: error:"), proc.stderr


def test_help_documents_every_option_and_defect() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rpcproxy", "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0
    for name in OPTIONS:
        assert name in proc.stdout
    for defect in (
        "replay-leak",
        "unmapped-subscriptions",
        "drop-during-reconnect",
        "no-failback",
        "health-without-timeout",
        "client-per-request",
    ):
        assert defect in proc.stdout


# -- method policy and decoding ----------------------------------------------------------------------------


def test_deny_list_and_read_only_set() -> None:
    policy = MethodPolicy(["admin_", "debug_"], ["my_read"])
    assert policy.denied("admin_peers") and policy.denied("debug_traceTransaction")
    assert not policy.denied("eth_blockNumber")
    assert policy.is_read_only("eth_call") and policy.is_read_only("my_read")
    assert not policy.is_read_only("eth_sendRawTransaction")
    assert MethodPolicy([]).denied("admin_peers") is False


def test_decoding_never_raises_on_malformed_input() -> None:
    # the service runs with Python's default recursion limit; hypothesis may have raised this worker's
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        for data in (b"\xff\xfe", b"[" * 5000, b"{", b"NaN", '{"a": Infinity}', b""):
            value, problem = decode(data)
            assert value is None and problem and problem.startswith("parse error"), (data[:20], problem)
    finally:
        sys.setrecursionlimit(limit)
    assert request_problem({"jsonrpc": "2.0", "id": 1, "method": "x"}) is None
    assert request_problem({"id": [1], "method": "x"}) is not None
    assert request_problem({"id": 1, "method": ""}) is not None
    assert request_problem({"id": 1, "method": "x", "params": 3}) is not None
    assert request_problem([]) is not None


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
def _refuse(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


_STDLIB = json.JSONDecoder(parse_constant=_refuse)  # the json module as the proxy configures it


def _stdlib(text: str) -> tuple[bool, object]:
    try:
        return True, _STDLIB.decode(text)
    except (ValueError, RecursionError):
        return False, None


@settings(max_examples=400, derandomize=True, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_the_fast_json_path_reads_and_writes_what_the_json_module_does(value: object, ascii: bool) -> None:
    # orjson is the fast path: big integers, non-ASCII and lone surrogates must come out as with json
    text = json.dumps(value, ensure_ascii=ascii)
    for data in (text, text.encode("utf-8", "surrogatepass")):
        decoded, problem = decode(data)
        ok, expected = _stdlib(text)
        assert (problem is None) == ok
        if ok:
            assert repr(decoded) == repr(expected)
    assert repr(json.loads(encode(value))) == repr(value)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.eE+-truefalsn \\u\x01é'))
def test_the_fast_json_path_accepts_and_refuses_what_the_json_module_does(text: str) -> None:
    decoded, problem = decode(text)
    ok, expected = _stdlib(text)
    assert (problem is None) == ok, (text, problem)
    if ok:
        assert repr(decoded) == repr(expected)


def test_constants_are_read_only_when_asked_for() -> None:
    # a client's NaN is refused; an upstream's is relayed as it came (the session core asks for constants)
    assert decode('{"a": NaN}')[0] is None
    value, problem = decode('{"a": NaN, "b": Infinity}', constants=True)
    assert problem is None and value["b"] == float("inf") and value["a"] != value["a"]
    assert decode("[1, 2", constants=True)[1].startswith("parse error")


def test_byte_caps_count_utf8_bytes_not_characters() -> None:
    from rpcproxy.jsonrpc import utf8_size

    assert utf8_size('{"a":1}') == 7
    assert utf8_size('{"a":"é€😀"}') == 8 + 2 + 3 + 4  # 8 ASCII characters
    assert utf8_size(b"\xff\x00") == 2
    assert utf8_size('"\ud800"') == 5  # a lone surrogate (valid JSON escape decoded) is still counted


def test_a_corked_burst_is_held_then_sent_and_the_socket_left_uncorked() -> None:
    import socket

    from rpcproxy.corking import corked

    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as sender:
            peer, _ = server.accept()
            with peer:
                cork = getattr(socket, "TCP_CORK", None)
                with corked(sender, burst=True):
                    sender.sendall(b"one")
                    sender.sendall(b"two")
                    if cork is not None:
                        assert sender.getsockopt(socket.IPPROTO_TCP, cork) == 1
                if cork is not None:
                    assert sender.getsockopt(socket.IPPROTO_TCP, cork) == 0
                with corked(sender, burst=False), corked(None, burst=True):
                    sender.sendall(b"three")
                peer.settimeout(10)
                received = b""
                while len(received) < 11:
                    received += peer.recv(64)
                assert received == b"onetwothree"
