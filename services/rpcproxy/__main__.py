"""``rpcproxy``: the JSON-RPC proxy in front of execution nodes (HTTP and WebSocket, failover, failback)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import sys
from collections.abc import Callable

from servicekit import (
    ArgumentParser,
    JsonLogger,
    add_defect_argument,
    announce_defects,
    configure_logging,
    parse_hostport,
    write_ready_file,
)
from servicekit.cli import format_hostport

from rpcproxy.config import ConfigError, ProxyConfig, build_config, options_help
from rpcproxy.server import DEFECTS, Proxy

EPILOG = f"""\
upstreams:
  --primary/--backup NAME=HTTP_URL[,ws=WS_URL]   routing order = primaries, then backups, as given.
  The WebSocket URL defaults to the HTTP one with ws:// (wss:// for https://), e.g.
  --primary el1=http://127.0.0.1:8545/  ->  ws://127.0.0.1:8545/

endpoints: POST / (JSON-RPC, single or batch), GET /ws (WebSocket), GET /status, GET /health, GET /metrics

{options_help()}
"""


LOOPS = ("auto", "uvloop", "asyncio")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="rpcproxy",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        type=parse_hostport,
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:0 = a free port, see --ready-file)",
    )
    parser.add_argument("--name", default="rpcproxy", help="name in logs and the ready file")
    parser.add_argument("--primary", action="append", default=[], metavar="NAME=URL", help="a primary node")
    parser.add_argument("--backup", action="append", default=[], metavar="NAME=URL", help="a backup node")
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file with the options listed below")
    parser.add_argument("--ready-file", metavar="PATH", help="JSON written once listening")
    parser.add_argument("--log-file", metavar="PATH", help="JSON-lines log (default: stderr)")
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        metavar="LOOP",
        help="event loop: uvloop (the 'fast' extra), asyncio, or auto (default: uvloop when installed, "
        "else asyncio)",
    )
    add_defect_argument(parser, DEFECTS)
    return parser


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The event loop to run on, by name, and its factory (None: asyncio's default). Raises ImportError
    when uvloop is asked for by name and not installed."""
    if choice == "asyncio" or (choice == "auto" and importlib.util.find_spec("uvloop") is None):
        return "asyncio", None
    import uvloop

    return "uvloop", uvloop.new_event_loop


async def serve(
    config: ProxyConfig,
    defects: frozenset[str],
    log: JsonLogger,
    host: str,
    port: int,
    name: str,
    ready_file: str | None,
    loop_name: str = "asyncio",
) -> None:
    """Run until SIGTERM/SIGINT."""
    proxy = Proxy(config, defects, log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound_host, bound_port = await proxy.start(host, port)
    listen = format_hostport(bound_host, bound_port)
    write_ready_file(
        ready_file,
        name=name,
        service="rpcproxy",
        listen=listen,
        http=f"http://{listen}/",
        ws=f"ws://{listen}/ws",
        upstreams=[u.name for u in config.upstreams],
    )
    log.info(
        "proxy.listening",
        listen=listen,
        loop=loop_name,
        upstreams=[vars(u) for u in config.upstreams],
        config={k: v for k, v in vars(config).items() if k != "upstreams"},
    )
    await stop.wait()
    log.info("proxy.stopping")
    await proxy.stop()
    log.info("proxy.stopped")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = build_config(args.primary, args.backup, args.config)
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        loop_name, factory = loop_factory(args.loop)
    except ImportError:
        parser.error("--loop uvloop: uvloop is not installed (pip install 'incident-workbook[fast]')")
    log = configure_logging("rpcproxy", args.name, args.log_file)
    defects = announce_defects(log, args.defect, DEFECTS)
    host, port = args.listen
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(config, defects, log, host, port, args.name, args.ready_file, loop_name))
    except OSError as exc:
        sys.stderr.write(f"rpcproxy: error: cannot listen on {format_hostport(host, port)}: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
