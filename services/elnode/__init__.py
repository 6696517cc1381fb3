"""elnode: a simulated Ethereum execution node, the upstream the RPC proxy incidents run against.

JSON-RPC 2.0 over HTTP (``POST /``) and WebSocket (``GET /`` upgrade) on one address, like a dev node;
``GET /health`` (JSON, 200 while serving) and ``GET /metrics`` (Prometheus text).

Chain: deterministic from (chain id, seed, genesis time, block time). The head is
``floor((now - genesis) / block_time)``, so nodes of one chain agree on head number and hash at any
instant and a restarted node continues without regression. Each block has 1-3 transactions and one
log per transaction (Transfer/Approval topics, 3 contract addresses: ``elnode.chain.Chain.contracts``).

Methods: eth_chainId, net_version, web3_clientVersion, eth_blockNumber, eth_getBlockByNumber,
eth_getBlockByHash, eth_getLogs, eth_syncing, eth_gasPrice, and over WebSocket eth_subscribe
(newHeads, logs, newPendingTransactions, syncing) / eth_unsubscribe; batches (at most 1000).

Admin fault API — served only with ``--enable-fault-injection`` (otherwise every path is 404):

- ``GET /admin/faults`` → the knobs as JSON.
- ``POST /admin/faults`` with a JSON object merged into the knobs, returns the knobs (400 + ``{"error"}``
  on a bad patch, which changes nothing)::

      {"stall": bool,                 # freeze the reported head (it falls behind the clock)
       "lag_blocks": int,             # report clock head - N at once (eth_syncing then says syncing;
                                      # newHeads never go backwards: they pause until the lagging
                                      # head passes the last one sent)
       "delay": {"<method>"|"*": seconds},                 # hold answers; entries merge, null removes
       "fail": {"<method>"|"*": {"code": int, "message": str, "fraction": float}},
                                      # fail that share of calls, spread evenly (no randomness)
       "slow_handshake": {"count": K, "seconds": S},      # delay the next K WebSocket upgrades by S
       "heartbeat_interval": seconds | null}              # elnode_heartbeat notification to every WS

- ``POST /admin/faults/reset`` → every knob off.
- ``POST /admin/drop-websockets`` (optional body ``{"mode": "close"|"abort"}``) → closes every
  WebSocket connection now (close frame 1001, or TCP abort), returns ``{"dropped": n, "mode": ...}``.

Heartbeat notifications:
``{"jsonrpc":"2.0","method":"elnode_heartbeat","params":{"seq","ts","node","head"}}``.
Client: :class:`elnode.admin.AdminClient` (async ``get/set/reset/drop_websockets`` and ``*_sync`` twins).
"""
