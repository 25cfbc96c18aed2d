"""Vectorised RESP encoding and a raw send/receive path for the Redis store's hot commands.

redis-py packs a command argument by argument in Python; for a 4,096-key MGET that costs more
than Redis spends answering it. Row keys and encoded rows have fixed sizes, so the store builds
whole commands (MGET, MSET, one SET PXAT per row) as one numpy byte matrix, one row per key,
and sends the bytes on a pooled connection. Replies are parsed by redis-py's parser (hiredis
when installed), so the wire protocol stays redis-py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

__all__ = ["MULTI", "EXEC", "execute_packed", "pack_command", "rows_concat"]

MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"

Arg = bytes | str | int | float


def _encode(arg: Arg) -> bytes:
    # The same conversions redis-py's Encoder applies.
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):
        raise TypeError("booleans are not valid Redis arguments")
    if isinstance(arg, int):
        return str(arg).encode()
    return repr(float(arg)).encode()


def pack_command(args: Sequence[Arg]) -> bytes:
    """One RESP command from its arguments."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _encode(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def rows_concat(n: int, parts: Sequence[bytes | npt.NDArray[np.uint8]]) -> bytes:
    """Concatenate `parts` row by row for `n` rows and return all rows' bytes joined.

    Args:
        n: number of rows.
        parts: each either bytes (the same in every row) or an `(n, w)` uint8 matrix.

    Returns:
        ``n * sum(widths)`` bytes.
    """
    widths = [len(p) if isinstance(p, bytes) else int(p.shape[1]) for p in parts]
    out = np.empty((n, sum(widths)), dtype=np.uint8)
    col = 0
    for part, width in zip(parts, widths, strict=True):
        if isinstance(part, bytes):
            out[:, col : col + width] = np.frombuffer(part, dtype=np.uint8)
        else:
            out[:, col : col + width] = part
        col += width
    return out.tobytes()


def execute_packed(client: redis.Redis, chunks: Sequence[bytes], replies: int) -> list[Any]:
    """Send pre-packed commands on one pooled connection and read `replies` replies.

    Error replies raise `redis.ResponseError`; any failure drops the connection, since replies
    left unread would desynchronise it.
    """
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(list(chunks))  # type: ignore[no-untyped-call]
        return [conn.read_response() for _ in range(replies)]
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(conn)
