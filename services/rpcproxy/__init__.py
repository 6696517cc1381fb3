"""rpcproxy: a JSON-RPC proxy in front of Ethereum execution nodes (HTTP and WebSocket), with health
checks, failover and failback, and the 2026-01-23 incident's defects as ``--defect`` switches.

Modules: ``config`` (CLI upstreams + TOML options), ``health`` (state machine and monitor), ``httpproxy``
(``POST /``), ``upstream_http`` (pooled upstream HTTP client); WebSocket sessions: ``session`` (one client
WebSocket: state, writer, life cycle), ``relay`` (id rewriting both ways), ``moves`` (failover, failback,
queue and in-flight recovery), ``heads`` (newHeads de-dup and gap fill), ``tables`` (ids, subscriptions,
heads), ``upstream_ws`` (one upstream WebSocket); ``metrics``, ``jsonrpc``, ``server`` (the app),
``__main__``.
"""
