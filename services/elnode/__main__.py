"""``elnode`` command line: serve one simulated execution node until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from servicekit import ArgumentParser, configure_logging, parse_hostport, write_ready_file
from servicekit.cli import format_hostport

DEFAULT_GENESIS_TIME = 1_700_000_000  # a fixed default, so nodes agree without being told


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _genesis(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected unix seconds, got {text!r}") from None


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="elnode",
        description="A simulated Ethereum execution node: JSON-RPC over HTTP (POST /) and WebSocket (GET /) "
                    "on one address, a deterministic chain, and run-time fault knobs.")
    parser.add_argument("--listen", type=parse_hostport, default=("127.0.0.1", 0), metavar="HOST:PORT",
                        help="address to serve on; port 0 picks a free port, reported in the ready file "
                             "(default 127.0.0.1:0)")
    parser.add_argument("--name", default="elnode", help="node name in logs, metrics and the ready file")
    parser.add_argument("--chain-id", type=_positive_int, default=1337, metavar="N",
                        help="chain id (eth_chainId, net_version); part of the chain's identity "
                             "(default 1337)")
    parser.add_argument("--block-time", type=_positive_float, default=1.0, metavar="SECONDS",
                        help="seconds per block; head = floor((now - genesis) / block time) (default 1)")
    parser.add_argument("--seed", type=_int, default=0, metavar="N",
                        help="seed of block hashes, transactions and logs; nodes with equal chain id, seed, "
                             "genesis time and block time serve identical blocks (default 0)")
    parser.add_argument("--genesis-time", type=_genesis, default=DEFAULT_GENESIS_TIME, metavar="UNIX",
                        help=f"unix time of block 0 (default {DEFAULT_GENESIS_TIME})")
    parser.add_argument("--ready-file", metavar="PATH",
                        help='write {"name","service","pid","listen","started_at","http","ws"} here once '
                             "listening")
    parser.add_argument("--log-file", metavar="PATH", help="JSON-lines log (default: stderr)")
    parser.add_argument("--enable-fault-injection", action="store_true",
                        help="serve the admin fault API under /admin/ (absent otherwise); see the elnode "
                             "package docstring")
    parser.add_argument("--max-message-size", type=_positive_int, default=5 * 1024 * 1024, metavar="BYTES",
                        help="largest HTTP body or WebSocket message accepted (default 5 MiB, as geth's "
                             "HTTP limit); larger: HTTP 413 with error -32600, WebSocket close 1009")
    parser.add_argument("--no-request-log", action="store_true",
                        help="do not log one line per JSON-RPC request (subscriptions and faults still are)")
    return parser


async def serve(args: argparse.Namespace) -> None:
    from elnode.chain import Chain, ChainSpec  # imported here: --help and bad flags answer fast
    from elnode.node import Node
    from elnode.server import ElNode

    log = configure_logging("elnode", args.name, args.log_file)
    spec = ChainSpec(args.chain_id, args.seed, args.genesis_time, args.block_time)
    server = ElNode(Node(Chain(spec), name=args.name), log, fault_injection=args.enable_fault_injection,
                    max_message_size=args.max_message_size, log_requests=not args.no_request_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = await server.start(*args.listen)
    listen = format_hostport(host, port)
    write_ready_file(args.ready_file, name=args.name, service="elnode", listen=listen,
                     http=f"http://{listen}/", ws=f"ws://{listen}/", chain_id=spec.chain_id)
    log.info("started", listen=listen, chain_id=spec.chain_id, seed=spec.seed, genesis_time=spec.genesis_time,
             block_time=spec.block_time, head=server.node.head(), fault_injection=args.enable_fault_injection)
    if args.enable_fault_injection:
        log.warning("fault_injection.enabled", message="admin fault API served under /admin/")
    await stop.wait()
    log.info("stopping")
    await server.stop()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:  # e.g. the address is taken: one clear line, like a bad flag
        print(f"elnode: error: cannot serve on {format_hostport(*args.listen)}: {exc.strerror or exc}",
              file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
