"""Workloads: the clients' side of a scenario, each one call that records into a :class:`History`.

``kv``: :func:`write_unique` (a set: unique keys), :func:`write_register` (one key, one logical writer,
a concurrent reader), :func:`read_all`, :func:`present_anywhere`, :func:`crash_cycle` (kv-01's
write / ``kill -9`` / restart / read-back, shared by the notebook and the tests) and the other kv
notebooks' rounds. ``rpc``: :func:`request_stream` (requests at a steady rate),
:func:`subscribed_sessions` (WebSocket sessions each holding a newHeads subscription),
:func:`session_requests` (each session asks at its own pace), :func:`session_steps` (one session
through a list of steps, for a property search), :func:`force_move`, and views of the requests over
time. ``search``: :func:`property_search` (a seeded, shrinking search for an input that fails). ``load``:
:func:`sample_processes`, :func:`forced_reconnections` and :func:`repeated_moves`, run alongside a
scenario. Each operation goes through the client's own outcome rule (:func:`~workbook.kvcluster.kv_outcome`,
:func:`~workbook.rpcclient.rpc_outcome`). Notebooks call them as ``workloads.<name>``.
"""

from __future__ import annotations

from workbook.workloads.kv import (
    converges_within,
    crash_cycle,
    partial_failure,
    partition_round,
    present_anywhere,
    read_all,
    restart_all_round,
    stale_read_round,
    write_keys,
    write_register,
    write_unique,
)
from workbook.workloads.load import forced_reconnections, repeated_moves, sample_processes
from workbook.workloads.rpc import (
    FIVE_SUBSCRIPTIONS,
    TRANSFER_TOPIC,
    force_move,
    latency_over_time,
    notification_rows,
    request_stream,
    request_streams,
    session_requests,
    session_steps,
    share_over_time,
    subscribe_clients,
    subscribed_sessions,
    subscription_label,
)
from workbook.workloads.search import property_search

__all__ = [
    "FIVE_SUBSCRIPTIONS",
    "TRANSFER_TOPIC",
    "converges_within",
    "crash_cycle",
    "force_move",
    "forced_reconnections",
    "latency_over_time",
    "notification_rows",
    "partial_failure",
    "partition_round",
    "present_anywhere",
    "property_search",
    "read_all",
    "repeated_moves",
    "request_stream",
    "request_streams",
    "restart_all_round",
    "sample_processes",
    "session_requests",
    "session_steps",
    "share_over_time",
    "stale_read_round",
    "subscribe_clients",
    "subscribed_sessions",
    "subscription_label",
    "write_keys",
    "write_register",
    "write_unique",
]
