"""rpcproxy: a JSON-RPC proxy in front of Ethereum execution nodes (HTTP and WebSocket), with health
checks, failover and failback, and the 2026-01-23 incident's defects as ``--defect`` switches.

Modules: ``config`` (CLI upstreams + TOML options), ``health`` (state machine and monitor), ``httpproxy``
(``POST /``), ``upstream_http`` (pooled upstream HTTP client); WebSocket sessions: ``wscore`` (the session
core, free of I/O: ids, subscriptions, in-flight requests, the queue during a move and the move itself; events
in, ``wsactions`` out), ``heads`` (newHeads de-dup and gap fill, free of I/O), ``tables`` (ids, subscriptions,
heads), ``session`` (the asyncio layer: client reader and writer, timers), ``mover`` (the session's upstream
links and the waits of a move), ``upstream_ws`` (one upstream WebSocket); ``metrics``, ``jsonrpc``,
``server`` (the app), ``__main__``.
"""
