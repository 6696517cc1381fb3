"""Public client for kvstore nodes: ``KVClient`` (blocking) and ``AsyncKVClient`` (asyncio).

Both carry the highest version they have seen on every request, so a node behind in time moves its
clock past it (causality across nodes), and turn gRPC statuses into typed errors:
``KeyNotFound``, ``OutcomeUnknown`` (deadline: the write may or may not have happened),
``Unavailable``, ``InvalidArgument``, ``StorageFull``, else ``KVError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvstore.clock import ZERO, Stamp
from kvstore.proto import kvstore_pb2 as pb
from kvstore.proto import kvstore_pb2_grpc as pbg
from kvstore.replication import CHANNEL_OPTIONS

# Each client owns its connection (no subchannel shared with the process's other channels to the same
# address), so closing one client never touches another's connection attempt. The connect-time flakes
# once blamed on sharing came from CHANNEL_OPTIONS' connect timeout (see kvstore.replication).
CLIENT_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]


class KVError(Exception):
    """A failed call: ``code`` is the gRPC status name, ``details`` the node's message."""

    def __init__(self, code: str, details: str, target: str, *, applied: bool | None = None) -> None:
        super().__init__(f"{code}: {details} (node {target})")
        self.code = code
        self.details = details
        self.target = target
        self.applied = applied  # False: the node refused before any write; None: unknown


class KeyNotFound(KVError):
    """The key does not exist (or was deleted)."""


class OutcomeUnknown(KVError):
    """A deadline passed: the write may have been applied or not."""


class Unavailable(KVError):
    """Node down, not serving yet, or too few peers reachable (nothing was written)."""


class InvalidArgument(KVError):
    """Bad key or value."""


class StorageFull(KVError):
    """The node's LMDB map is full."""


_ERRORS = {"NOT_FOUND": KeyNotFound, "DEADLINE_EXCEEDED": OutcomeUnknown, "UNAVAILABLE": Unavailable,
           "INVALID_ARGUMENT": InvalidArgument, "RESOURCE_EXHAUSTED": StorageFull}


def error_from(exc: grpc.RpcError, target: str) -> KVError:
    """The typed error of a failed call; ``applied`` is False when the node said it changed nothing."""
    code = exc.code().name if exc.code() else "UNKNOWN"
    trailing = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
    applied = False if trailing.get("kv-applied") == "no" else None
    return _ERRORS.get(code, KVError)(code, exc.details() or "", target, applied=applied)


@dataclass(frozen=True)
class Written:
    """A put or delete that was acknowledged."""

    version: Stamp
    replicas: int


@dataclass(frozen=True)
class Value:
    """A read: the value and the version it carries."""

    value: bytes
    version: Stamp

    @property
    def text(self) -> str:
        return self.value.decode(errors="replace")


def _b(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def plain(msg: Message) -> dict[str, Any]:
    """A message as plain Python values (ints stay ints, maps become dicts): DataFrame-friendly."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        val = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out[f.name] = {k: plain(v) if isinstance(v, Message) else v for k, v in val.items()}
        elif f.is_repeated:
            out[f.name] = [plain(v) if isinstance(v, Message) else v for v in val]
        elif f.message_type is not None:
            out[f.name] = plain(val)
        else:
            out[f.name] = val
    return out


def status_dict(reply: pb.StatusReply) -> dict[str, Any]:
    return plain(reply)


class _Base:
    def __init__(self, target: str, *, timeout: float = 5.0, carry_version: bool = True) -> None:
        self.target = target
        self.timeout = timeout
        self.carry_version = carry_version
        self.seen: Stamp = ZERO

    def _seen(self) -> pb.Version | None:
        return self.seen.to_pb() if self.carry_version and self.seen != ZERO else None

    def _saw(self, v: pb.Version) -> Stamp:
        stamp = Stamp.from_pb(v)
        self.seen = max(self.seen, stamp)
        return stamp


class KVClient(_Base):
    """Blocking client for one node (``target`` = HOST:PORT). Usable as a context manager."""

    def __init__(self, target: str, *, timeout: float = 5.0, carry_version: bool = True) -> None:
        super().__init__(target, timeout=timeout, carry_version=carry_version)
        self.channel = grpc.insecure_channel(target, options=CLIENT_OPTIONS)
        self._kv = pbg.KVStub(self.channel)
        self._admin = pbg.AdminStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def _call(self, fn: Any, req: Any, timeout: float | None) -> Any:
        try:
            return fn(req, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise error_from(exc, self.target) from None

    def put(self, key: bytes | str, value: bytes | str, *, timeout: float | None = None) -> Written:
        r = self._call(self._kv.Put, pb.PutRequest(key=_b(key), value=_b(value), seen=self._seen()), timeout)
        return Written(self._saw(r.version), r.replicas)

    def get(self, key: bytes | str, *, timeout: float | None = None) -> Value:
        r = self._call(self._kv.Get, pb.GetRequest(key=_b(key), seen=self._seen()), timeout)
        return Value(r.value, self._saw(r.version))

    def delete(self, key: bytes | str, *, timeout: float | None = None) -> Written:
        r = self._call(self._kv.Delete, pb.DeleteRequest(key=_b(key), seen=self._seen()), timeout)
        return Written(self._saw(r.version), r.replicas)

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        return status_dict(self._call(self._admin.Status, pb.StatusRequest(), timeout))

    def set_clock_offset(self, seconds: float, *, timeout: float | None = None) -> float:
        req = pb.SetClockOffsetRequest(offset_s=seconds)
        return self._call(self._admin.SetClockOffset, req, timeout).offset_s

    def health(self, *, timeout: float = 1.0) -> str:
        """SERVING / NOT_SERVING / UNREACHABLE."""
        try:
            r = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> KVClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncKVClient(_Base):
    """asyncio client for one node; ``await client.close()`` (or ``async with``) when done."""

    def __init__(self, target: str, *, timeout: float = 5.0, carry_version: bool = True) -> None:
        super().__init__(target, timeout=timeout, carry_version=carry_version)
        self.channel = grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS)
        self._kv = pbg.KVStub(self.channel)
        self._admin = pbg.AdminStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def _call(self, fn: Any, req: Any, call_timeout: float | None) -> Any:
        try:
            return await fn(req, timeout=call_timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from(exc, self.target) from None

    async def put(self, key: bytes | str, value: bytes | str, *,
                  call_timeout: float | None = None) -> Written:
        req = pb.PutRequest(key=_b(key), value=_b(value), seen=self._seen())
        r = await self._call(self._kv.Put, req, call_timeout)
        return Written(self._saw(r.version), r.replicas)

    async def get(self, key: bytes | str, *, call_timeout: float | None = None) -> Value:
        r = await self._call(self._kv.Get, pb.GetRequest(key=_b(key), seen=self._seen()), call_timeout)
        return Value(r.value, self._saw(r.version))

    async def delete(self, key: bytes | str, *, call_timeout: float | None = None) -> Written:
        r = await self._call(self._kv.Delete, pb.DeleteRequest(key=_b(key), seen=self._seen()), call_timeout)
        return Written(self._saw(r.version), r.replicas)

    async def status(self, *, call_timeout: float | None = None) -> dict[str, Any]:
        return status_dict(await self._call(self._admin.Status, pb.StatusRequest(), call_timeout))

    async def set_clock_offset(self, seconds: float, *, call_timeout: float | None = None) -> float:
        req = pb.SetClockOffsetRequest(offset_s=seconds)
        r = await self._call(self._admin.SetClockOffset, req, call_timeout)
        return r.offset_s

    async def health(self, *, call_timeout: float = 1.0) -> str:
        try:
            r = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=call_timeout)
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    async def close(self) -> None:
        await self.channel.close(grace=None)

    async def __aenter__(self) -> AsyncKVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
