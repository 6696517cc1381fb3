"""``kvstore`` command line: ``serve`` a node, or ``put``/``get``/``delete``/``status`` against one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from servicekit import (
    ArgumentParser,
    add_defect_argument,
    announce_defects,
    configure_logging,
    parse_hostport,
)
from servicekit.cli import format_hostport

from kvstore.limits import refusal
from kvstore.server import DEFECTS, Node, NodeConfig


def _peer(text: str) -> tuple[str, str]:
    name, sep, addr = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    host, port = parse_hostport(addr)
    if port == 0:
        raise argparse.ArgumentTypeError(f"peer {name} needs a real port, got {addr!r}")
    return name, format_hostport(host, port)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {n}")
    return n


def _seconds(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not n > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return n


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hexadecimal bytes, got {text!r}") from None


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="kvstore", description="Replicated key-value store node and client.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    s = sub.add_parser("serve", help="run a node")
    s.add_argument("--name", required=True)
    s.add_argument("--data-dir", required=True, type=Path)
    s.add_argument("--listen", required=True, type=parse_hostport, metavar="HOST:PORT")
    s.add_argument("--peer", action="append", default=[], type=_peer, metavar="NAME=HOST:PORT")
    s.add_argument("--write-quorum", type=_positive, help="nodes that must hold a write durably before it is "
                   "acknowledged (default: a majority)")
    s.add_argument("--map-size", type=_positive, default=256 << 20, help="LMDB map size in bytes")
    s.add_argument("--max-value-bytes", type=_positive, default=1 << 20)
    s.add_argument("--max-clock-drift", type=float, default=10.0, metavar="SECONDS",
                   help="refuse remote versions further ahead of this node's clock")
    s.add_argument("--write-timeout", type=float, default=5.0, metavar="SECONDS")
    s.add_argument("--catch-up-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="after this, a node still catching up says so in its log (it goes on waiting for "
                   "peers that answer)")
    s.add_argument("--compact-interval", type=_seconds, default=5.0, metavar="SECONDS",
                   help="how often to trim the log and remove old tombstones")
    s.add_argument("--tombstone-grace", type=float, default=300.0, metavar="SECONDS",
                   help="a tombstone every peer holds is removed once it is this old")
    s.add_argument("--no-group-commit", action="store_true", help="one LMDB transaction per write "
                   "(for the benchmark's comparison)")
    s.add_argument("--enable-fault-injection", action="store_true", help="expose Admin.SetClockOffset")
    s.add_argument("--ready-file")
    s.add_argument("--log-file")
    add_defect_argument(s, DEFECTS)
    for cmd, extra in (("put", "VALUE"), ("get", None), ("delete", None), ("status", None)):
        c = sub.add_parser(cmd, help=f"{cmd} against one node")
        c.add_argument("--target", required=True, type=parse_hostport, metavar="HOST:PORT")
        c.add_argument("--timeout", type=float, default=5.0)
        if cmd != "status":
            c.add_argument("key", nargs="?", help="the key; its bytes are taken as given (any encoding)")
            c.add_argument("--key-hex", type=_hex, metavar="HEX", help="the key as hexadecimal bytes "
                           "(instead of KEY)")
        if extra:
            c.add_argument("value", help="the value; its bytes are taken as given")
    return p


def _key_of(args: argparse.Namespace) -> bytes:
    """The key's exact bytes: --key-hex, or the argument as the OS gave it (os.fsencode undoes the
    surrogate escapes Python uses for argv bytes that are not UTF-8)."""
    if (args.key is None) == (args.key_hex is None):
        raise argparse.ArgumentTypeError("give the key either as KEY or as --key-hex HEX (exactly one)")
    return args.key_hex if args.key_hex is not None else os.fsencode(args.key)


def serve(args: argparse.Namespace) -> int:
    log = configure_logging("kvstore", args.name, args.log_file)
    defects = announce_defects(log, args.defect, DEFECTS)
    host, port = args.listen
    refused = refusal(args.max_value_bytes, args.map_size)
    if refused:
        print(f"kvstore: error: {refused}", file=sys.stderr)
        return 2
    peers = dict(args.peer)
    n = 1 + len(peers)
    if args.write_quorum and args.write_quorum > n:
        print(f"kvstore: error: --write-quorum {args.write_quorum} exceeds the {n} nodes", file=sys.stderr)
        return 2
    cfg = NodeConfig(name=args.name, data_dir=args.data_dir, host=host, port=port, peers=peers,
                     write_quorum=args.write_quorum, map_size=args.map_size,
                     max_value_bytes=args.max_value_bytes,
                     max_clock_drift_s=args.max_clock_drift, write_timeout_s=args.write_timeout,
                     catch_up_timeout_s=args.catch_up_timeout, compact_interval_s=args.compact_interval,
                     tombstone_grace_s=args.tombstone_grace, group_commit=not args.no_group_commit,
                     defects=defects, fault_injection=args.enable_fault_injection, ready_file=args.ready_file)
    profile = _profiler()
    try:
        asyncio.run(Node(cfg, log).run())
    except (OSError, RuntimeError) as exc:
        log.error("startup.failed", error=str(exc))
        print(f"kvstore: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(f"{os.environ['KVSTORE_PROFILE']}.{args.name}")
    return 0


def _profiler() -> Any:
    """With KVSTORE_PROFILE=PATH, profile the event loop's thread (cProfile) into PATH.NAME at exit:
    the benchmark uses it to show where a put's time goes."""
    if not os.environ.get("KVSTORE_PROFILE"):
        return None
    import cProfile

    profile = cProfile.Profile()
    profile.enable()
    return profile


def client_command(args: argparse.Namespace) -> int:
    from kvstore.client import KeyNotFound, KVClient, KVError

    target = format_hostport(*args.target)
    key = b""
    if args.command != "status":
        try:
            key = _key_of(args)
        except argparse.ArgumentTypeError as exc:
            print(f"kvstore {args.command}: error: {exc}", file=sys.stderr)
            return 2
    with KVClient(target, timeout=args.timeout) as c:
        try:
            if args.command == "put":
                w = c.put(key, os.fsencode(args.value))
                v = w.version
                print(f"ok version={v.wall_ms}.{v.logical}.{v.node} replicas={w.replicas}")
            elif args.command == "get":
                sys.stdout.buffer.write(c.get(key).value + b"\n")
            elif args.command == "delete":
                w = c.delete(key)
                print(f"deleted version={w.version.wall_ms}.{w.version.logical}.{w.version.node}")
            else:
                print(json.dumps(c.status(), indent=2))
        except KeyNotFound as exc:
            print(f"kvstore: not found: {exc.details}", file=sys.stderr)
            return 1
        except KVError as exc:
            print(f"kvstore: error: {exc.code}: {exc.details} (node {target})", file=sys.stderr)
            return 3 if exc.code == "DEADLINE_EXCEEDED" else 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return client_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
