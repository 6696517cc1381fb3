"""rpcproxy package."""
