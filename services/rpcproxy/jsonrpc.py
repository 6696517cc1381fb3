"""JSON-RPC envelopes as the proxy sees them: safe decoding, the proxy's own error answers, and which
methods are read-only (safe to send twice) or refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603
UPSTREAM_UNAVAILABLE = -32000  # no upstream could serve it, or the one that had it was lost
LIMIT_EXCEEDED = -32005  # a proxy cap (queue, subscriptions, in-flight, batch) was reached

# Reads: answering them twice (once from a lost upstream, once after a retry) changes nothing.
READ_ONLY_METHODS = frozenset(
    {
        "eth_blockNumber",
        "eth_chainId",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_blobBaseFee",
        "eth_syncing",
        "eth_protocolVersion",
        "eth_accounts",
        "eth_coinbase",
        "eth_mining",
        "eth_hashrate",
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getTransactionCount",
        "eth_getProof",
        "eth_call",
        "eth_estimateGas",
        "eth_createAccessList",
        "eth_getLogs",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getBlockReceipts",
        "eth_getBlockTransactionCountByNumber",
        "eth_getBlockTransactionCountByHash",
        "eth_getUncleCountByBlockNumber",
        "eth_getUncleCountByBlockHash",
        "eth_getUncleByBlockNumberAndIndex",
        "eth_getUncleByBlockHashAndIndex",
        "eth_getTransactionByHash",
        "eth_getTransactionByBlockNumberAndIndex",
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getTransactionReceipt",
        "net_version",
        "net_listening",
        "net_peerCount",
        "web3_clientVersion",
        "web3_sha3",
        # Over WebSocket a lost subscribe/unsubscribe is re-issued against the new upstream's state.
        "eth_subscribe",
        "eth_unsubscribe",
    }
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every message (``json.loads`` with an option builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_LENIENT = json.JSONDecoder()  # also reads NaN and Infinity, as json.loads does
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # likewise: json.dumps with options builds one per call

# orjson (Rust) reads and writes a frame 4x and 16x faster than the json module, and JSON is a tenth of
# the proxy's CPU per relayed request (docs/decisions.md). It is the fast path only, where its answer is
# the json module's: 16 digits in a row may be an integer beyond 64 bits, which orjson would read as a
# float, so such text takes the json module's exact path; anything orjson refuses (lone surrogates, a
# BOM, an integer it cannot write) goes to the json module too, which accepts it or names the problem.
_MANY_DIGITS_TEXT = re.compile(r"\d{16}").search
_MANY_DIGITS_BYTES = re.compile(rb"\d{16}").search


def decode(data: bytes | str, *, constants: bool = False) -> tuple[Any, str | None]:
    """Parse a body or frame: ``(value, None)``, or ``(None, reason)`` for anything malformed.

    NaN and Infinity are not JSON and are refused, unless *constants* (what an upstream sent is relayed
    as it came, rather than dropped).
    """
    digits = _MANY_DIGITS_TEXT if isinstance(data, str) else _MANY_DIGITS_BYTES
    if digits(data) is None:
        try:
            return orjson.loads(data), None
        except orjson.JSONDecodeError:
            pass  # the json module below decides, and says why in its own words
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return (_LENIENT if constants else _DECODER).decode(text), None
    except UnicodeDecodeError:
        return None, "parse error: not valid UTF-8"
    except RecursionError:
        return None, "parse error: JSON nested too deeply"
    except ValueError as exc:
        return None, f"parse error: {exc}"


def encode(message: Any) -> str:
    """Compact JSON text (non-ASCII characters as UTF-8, not escaped)."""
    try:
        return orjson.dumps(message).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate, a non-string key
        return _ENCODER.encode(message)


def valid_id(value: Any) -> bool:
    """JSON-RPC ids: string, integer, null (and finite numbers, tolerated)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    return value is None or isinstance(value, str | int)


def request_problem(obj: Any) -> str | None:
    """Why *obj* is not a request the proxy can route, or None."""
    if not isinstance(obj, dict):
        return "invalid request: expected a JSON object"
    if "id" in obj and not valid_id(obj["id"]):
        return "invalid request: id must be a string, number or null"
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        return 'invalid request: "method" must be a non-empty string'
    params = obj.get("params")
    if params is not None and not isinstance(params, list | dict):
        return 'invalid request: "params" must be an array or object'
    return None


def error(req_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": req_id if valid_id(req_id) else None, "error": err}


def id_of(obj: Any) -> Any:
    """The id to echo when answering *obj* with an error."""
    return obj.get("id") if isinstance(obj, dict) and valid_id(obj.get("id")) else None


class MethodPolicy:
    """Deny-list by prefix and the read-only set (built-in plus configured extras)."""

    def __init__(self, deny_prefixes: Iterable[str], extra_read_only: Iterable[str] = ()) -> None:
        self.deny_prefixes = tuple(deny_prefixes)
        self.read_only = READ_ONLY_METHODS | frozenset(extra_read_only)

    def denied(self, method: str) -> bool:
        return method.startswith(self.deny_prefixes) if self.deny_prefixes else False

    def is_read_only(self, method: str) -> bool:
        return method in self.read_only

    def deny_error(self, req_id: Any, method: str) -> dict[str, Any]:
        return error(req_id, METHOD_NOT_FOUND, f"method {method!r} is not allowed through this proxy")


_KNOWN_WRITES = frozenset(
    {
        "eth_sendRawTransaction",
        "eth_sendTransaction",
        "eth_sign",
        "eth_signTransaction",
        "eth_signTypedData_v4",
        "eth_newFilter",
        "eth_newBlockFilter",
        "eth_newPendingTransactionFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
        "eth_submitWork",
        "eth_submitHashrate",
    }
)


def method_label(method: str) -> str:
    """Method name as a metric label: known methods by name, anything else as "other" (bounded labels)."""
    return method if method in READ_ONLY_METHODS or method in _KNOWN_WRITES else "other"


def utf8_size(data: str | bytes) -> int:
    """Bytes *data* takes on the wire (a str as UTF-8; ASCII text, the common case, without encoding it)."""
    if isinstance(data, bytes):
        return len(data)
    return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
