"""The incident workbook's library: what a notebook imports, and nothing deeper.

    from workbook import Run, KVCluster, History, Nemesis, checkers, plots, verdict, params

Topology: :class:`Run` (a run directory, its services and fault links), :class:`KVCluster`,
:class:`EthStack`. Clients: :class:`WsClient` (strict or geth-like), :class:`HttpClient`. One
:class:`History` records every client operation and every fault (process ``nemesis``);
``workloads`` drive the clients, :class:`Nemesis` applies faults (as values: :class:`Fault`,
:class:`Schedule`, :func:`random_schedule`), ``checkers`` judge the history, ``plots`` draw it
(``plots.timeline(history)``), ``verdict`` concludes. Every wait is :func:`wait_until`.

Sync and async: a step that is instant (a signal, a link change, a fault) is a plain method; a step
that waits on a service (start, restart, a request, a status read, a wait) is a coroutine, awaited at
the top level of a cell. Low-level :class:`Service` also offers blocking forms for tests and scripts.

Errors: every one is a :class:`WorkbookError`; the tree is in ``workbook._exceptions``.
The runner (``workbook.runner``: ``workbook run``, the catalogue, profiles) is not for notebooks.

Attributes load lazily, so ``import workbook`` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # topology
    "Run": "workbook.run", "Service": "workbook.service", "http_health": "workbook.service",
    "KVCluster": "workbook.kvcluster", "kv_health": "workbook.kvcluster",
    "EthStack": "workbook.ethstack", "samples": "workbook.ethstack",
    # clients
    "WsClient": "workbook.rpcclient", "HttpClient": "workbook.rpcclient",
    "message_rows": "workbook.rpcclient", "trace_records": "workbook.rpcclient",
    "UNSOLICITED_RESPONSE": "workbook.rpcclient", "NOTIFICATION_UNKNOWN_SUB": "workbook.rpcclient",
    "NOTIFICATION_KNOWN_SUB": "workbook.rpcclient", "RESPONSE_TO_PENDING": "workbook.rpcclient",
    # history, faults, judgement
    "History": "workbook.history", "Nemesis": "workbook.nemesis", "Fault": "workbook.nemesis",
    "Schedule": "workbook.nemesis", "random_schedule": "workbook.nemesis",
    "wait_until": "workbook.waiting", "http_load": "workbook.httpload",
    # errors
    "WorkbookError": "workbook._exceptions", "ServiceError": "workbook._exceptions",
    "FaultLinkError": "workbook._exceptions", "NemesisError": "workbook._exceptions",
    "ConditionTimeout": "workbook._exceptions", "ParameterError": "workbook._exceptions",
    "VerdictError": "workbook._exceptions", "RpcClientError": "workbook._exceptions",
    "RpcResponseError": "workbook._exceptions", "RequestTimeout": "workbook._exceptions",
    "ConnectionLost": "workbook._exceptions",
}
_MODULES = ("checkers", "nemesis", "params", "plots", "verdict", "workloads")

__all__ = [
    "NOTIFICATION_KNOWN_SUB",
    "NOTIFICATION_UNKNOWN_SUB",
    "RESPONSE_TO_PENDING",
    "UNSOLICITED_RESPONSE",
    "ConditionTimeout",
    "ConnectionLost",
    "EthStack",
    "Fault",
    "FaultLinkError",
    "History",
    "HttpClient",
    "KVCluster",
    "Nemesis",
    "NemesisError",
    "ParameterError",
    "RequestTimeout",
    "RpcClientError",
    "RpcResponseError",
    "Run",
    "Schedule",
    "Service",
    "ServiceError",
    "VerdictError",
    "WorkbookError",
    "WsClient",
    "checkers",
    "http_health",
    "http_load",
    "kv_health",
    "message_rows",
    "nemesis",
    "params",
    "plots",
    "random_schedule",
    "samples",
    "trace_records",
    "verdict",
    "wait_until",
    "workloads",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"workbook.{name}")
    else:
        raise AttributeError(f"module 'workbook' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from workbook import checkers, nemesis, params, plots, verdict, workloads
    from workbook._exceptions import (
        ConditionTimeout,
        ConnectionLost,
        FaultLinkError,
        NemesisError,
        ParameterError,
        RequestTimeout,
        RpcClientError,
        RpcResponseError,
        ServiceError,
        VerdictError,
        WorkbookError,
    )
    from workbook.ethstack import EthStack, samples
    from workbook.history import History
    from workbook.httpload import http_load
    from workbook.kvcluster import KVCluster, kv_health
    from workbook.nemesis import Fault, Nemesis, Schedule, random_schedule
    from workbook.rpcclient import (
        NOTIFICATION_KNOWN_SUB,
        NOTIFICATION_UNKNOWN_SUB,
        RESPONSE_TO_PENDING,
        UNSOLICITED_RESPONSE,
        HttpClient,
        WsClient,
        message_rows,
        trace_records,
    )
    from workbook.run import Run
    from workbook.service import Service, http_health
    from workbook.waiting import wait_until
