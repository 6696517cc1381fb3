"""JSON-RPC 2.0 envelopes: decoding bodies, validating requests, and building responses and errors.

Malformed input of any kind (invalid UTF-8, invalid JSON, NaN, absurd numbers, deep nesting, wrong
types) becomes the spec's error object; nothing in here raises anything but ``RpcError``.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000

MAX_DEPTH = 128
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class RpcError(Exception):
    """A JSON-RPC error object; ``id`` is the request id it answers (None when unknown)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(frozen=True)
class Request:
    """A valid request; ``id`` is ``None`` for a notification (``is_notification``)."""

    method: str
    params: list[Any] | dict[str, Any]
    id: Any
    is_notification: bool


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(data: bytes) -> bool:
    """Nesting deeper than MAX_DEPTH? (Checked before parsing: deep JSON can exhaust a thread's C stack.)"""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    steps = (1 if b in b"[{" else -1 for b in brackets)
    return max(itertools.accumulate(steps), default=0) > MAX_DEPTH


def decode(body: bytes | str) -> Any:
    """Parse a request body, mapping every kind of malformed text to -32700."""
    try:
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        if _too_deep(body):
            raise RpcError(PARSE_ERROR, f"parse error: JSON nested deeper than {MAX_DEPTH}")
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise RpcError(PARSE_ERROR, "parse error: body is not valid UTF-8") from None
    except RecursionError:
        raise RpcError(PARSE_ERROR, "parse error: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers beyond the digit limit
        raise RpcError(PARSE_ERROR, f"parse error: {exc}") from None


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    return value is None or isinstance(value, str | int)


def request_id(obj: Any) -> Any:
    """The id to echo in an error answering *obj* (None when absent or itself invalid)."""
    if isinstance(obj, dict):
        value = obj.get("id")
        return value if _valid_id(value) else None
    return None


def validate(obj: Any) -> Request:
    """Check one request object against JSON-RPC 2.0; raise -32600 naming what is wrong."""
    if not isinstance(obj, dict):
        raise RpcError(INVALID_REQUEST, "invalid request: expected a JSON object")
    if obj.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    has_id = "id" in obj
    if has_id and not _valid_id(obj["id"]):
        raise RpcError(INVALID_REQUEST, "invalid request: id must be a string, number or null")
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, 'invalid request: "method" must be a non-empty string')
    params = obj.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list | dict):
        raise RpcError(INVALID_REQUEST, 'invalid request: "params" must be an array or object')
    return Request(method, params, obj["id"] if has_id else None, not has_id)


def result(req_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "result": value}


def error(req_id: Any, err: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": err.as_json()}


def encode(message: Any) -> str:
    return json.dumps(message, separators=(",", ":"))
