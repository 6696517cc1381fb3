"""Who holds a TCP port: found before gRPC binds, so a taken port is one clear line (gRPC's own bind
failure prints a raw add_port.cc line to stderr first)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path


def in_use(host: str, port: int) -> bool:
    """True when binding *host*:*port* fails with "address in use" (someone listens there already)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return False  # let gRPC report the address it cannot resolve
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no obstacle
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def holder_of(port: int) -> str:
    """' (held by pid N: CMD)' for the process listening on *port*, found through /proc; '' if unknown."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                        return f" (held by pid {pid}: {cmd[:120]})"
            except OSError:
                continue
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return ""
