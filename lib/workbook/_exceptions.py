"""Every error the workbook raises, in one tree (httpx's ``_exceptions.py`` is the model).

    WorkbookError                 the root: ``except WorkbookError`` catches anything the library raised
    ├── ServiceError              a service did not start, did not become ready, or could not be controlled
    ├── FaultLinkError            a fault link was misused (unknown link, bad direction, closed)
    ├── NemesisError              a fault or a schedule is invalid, or a fault could not be applied
    ├── ConditionTimeout          a ``wait_until`` deadline passed (also a ``TimeoutError``)
    ├── ParameterError            a notebook parameter is undeclared or ill-typed (also ``ValueError``)
    ├── VerdictError              a notebook's verdict does not hold (also ``AssertionError``)
    ├── RpcClientError            a JSON-RPC client call failed
    │   ├── RpcResponseError      the server answered with a JSON-RPC error object
    │   ├── RequestTimeout        no answer within the deadline (also ``TimeoutError``)
    │   └── ConnectionLost        the connection closed with the request outstanding
    └── RunnerError               the runner was given a bad plan (``workbook.runner``; also ``ValueError``)
        ├── CatalogError          a notebook's metadata or parameters cell breaks the conventions
        └── ProfileError          a profile file is malformed or names an unknown key

Service clients raise their own types (``kvstore.client.KVError`` and its subclasses): the services
never import the workbook.
"""

from __future__ import annotations

from typing import Any


class WorkbookError(Exception):
    """Root of every error the workbook library raises."""


class ServiceError(WorkbookError):
    """A service did not start, did not become ready, or could not be controlled."""


class FaultLinkError(WorkbookError):
    """A fault link was misused: unknown name, bad direction, or used after its links were closed."""


class NemesisError(WorkbookError):
    """A fault or a schedule is invalid, or a fault could not be applied."""


class ConditionTimeout(WorkbookError, TimeoutError):
    """A condition did not become true before its deadline (the message says which)."""


class ParameterError(WorkbookError, ValueError):
    """A notebook parameter is undeclared, of the wrong type, or out of range (one line)."""


class VerdictError(WorkbookError, AssertionError):
    """The notebook's verdict does not hold: the incident did not reproduce, or the invariant broke."""


class RpcClientError(WorkbookError):
    """A JSON-RPC client call failed."""


class RpcResponseError(RpcClientError):
    """The server answered with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None, *, method: str = "",
                 id: Any = None) -> None:
        super().__init__(f"{method} (id {id!r}): error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class RequestTimeout(RpcClientError, TimeoutError):
    """No answer within the deadline."""


class ConnectionLost(RpcClientError):
    """The connection closed while the request was outstanding."""


class RunnerError(WorkbookError, ValueError):
    """The runner was given something it cannot run (one line)."""


class CatalogError(RunnerError):
    """A notebook's metadata or parameters cell breaks the conventions."""


class ProfileError(RunnerError):
    """A profile file is malformed or names an unknown key."""
