"""Message sizes: every replication batch is bounded in bytes, and every channel's limit is derived from
``--max-value-bytes`` so that a value up to that size always fits in one message, with room to spare.

A batch holds entries until the next would take it past ``BATCH_BYTES``; it always holds at least one,
so the largest batch is ``BATCH_BYTES`` plus one entry of the largest value.
"""

from __future__ import annotations

from kvstore.storage import MAX_KEY_BYTES

BATCH_BYTES = 1 << 20          # replication batches (Replicate, Pull, FetchBucket pages) aim below this
ENTRY_OVERHEAD = 4096          # an entry beyond its value: key, origin, version, sequence, framing
ENVELOPE_BYTES = 64 << 10      # a message beyond its entries: sender, watermarks, digests
MIN_LIMIT = 4 << 20            # never below gRPC's default
GRPC_MAX = (1 << 31) - 1       # gRPC's message lengths are 32-bit signed integers


def entry_bytes(max_value_bytes: int) -> int:
    """The largest serialized entry a node with this value limit can make."""
    return max_value_bytes + MAX_KEY_BYTES + ENTRY_OVERHEAD


def message_limit(max_value_bytes: int) -> int:
    """The send/receive limit of every channel: one full batch plus one largest entry and an envelope."""
    return max(MIN_LIMIT, BATCH_BYTES + entry_bytes(max_value_bytes) + ENVELOPE_BYTES)


def refusal(max_value_bytes: int, map_size: int) -> str | None:
    """Why this --max-value-bytes cannot be carried (one line), or None when it can."""
    limit = message_limit(max_value_bytes)
    if limit > GRPC_MAX:
        most = GRPC_MAX - BATCH_BYTES - ENVELOPE_BYTES - MAX_KEY_BYTES - ENTRY_OVERHEAD
        return (f"--max-value-bytes {max_value_bytes} needs {limit}-byte messages; gRPC carries at most "
                f"{GRPC_MAX}, so the value limit can be at most {most}")
    need = 2 * entry_bytes(max_value_bytes)  # the log entry and the data row each hold the value
    if need > map_size:
        return (f"--max-value-bytes {max_value_bytes} needs a --map-size of at least {need} bytes (a value "
                f"is stored twice: log and data); the map size is {map_size}")
    return None


def grpc_options(max_value_bytes: int) -> list[tuple[str, int]]:
    """Explicit send and receive limits for a channel or server, the same on both ends."""
    limit = message_limit(max_value_bytes)
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
