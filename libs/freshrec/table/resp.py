"""Vectorised RESP encoding and a raw send/receive path for the Redis store's hot commands.

redis-py packs a command argument by argument in Python; for a 4,096-key MGET that costs more
than Redis spends answering it. Row keys and encoded rows have fixed sizes, so the store builds
whole commands (MGET, MSET, one SET PXAT per row) as one numpy byte matrix, one row per key,
and sends the bytes on a pooled connection. Replies are parsed by redis-py's parser (hiredis
when installed), so the wire protocol stays redis-py's; a long pipeline's replies are taken
from its hiredis reader directly (`read_replies`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import numpy as np
import numpy.typing as npt
import redis

try:  # what redis-py's hiredis reader returns for an incomplete reply
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # another redis-py: every reply goes through `read_response`
    NOT_ENOUGH_DATA = None

__all__ = ["MULTI", "EXEC", "execute_packed", "pack_command", "read_replies", "rows_concat"]

MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"

Arg = bytes | str | int | float

# Fewer replies than this are read through redis-py's `read_response`, whose per-reply cost
# only matters in long pipelines.
_FAST_READ_MIN = 64


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
        return read_replies(conn, replies)
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(conn)


def read_replies(conn: Any, replies: int) -> list[Any]:
    """Read `replies` replies from `conn`, as `conn.read_response()` would one at a time.

    A pipeline of thousands of single-row commands (the packed layout's HGETs) spends most
    of its client time in redis-py's per-reply bookkeeping, several times what hiredis takes
    to parse the reply. When the connection parses with hiredis, the replies are taken from
    its reader directly, refilled from the socket by the parser's own `read_from_socket`;
    other parsers go through `read_response`.

    Raises:
        redis.ResponseError: an error reply (the rest are left unread: drop the connection).
    """
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    refill = getattr(parser, "read_from_socket", None)
    if (
        NOT_ENOUGH_DATA is None
        or not isinstance(reader, hiredis.Reader)
        or refill is None
        or replies < _FAST_READ_MIN
    ):
        return [conn.read_response() for _ in range(replies)]
    out: list[Any] = []
    while len(out) < replies:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA or reply is False:
            refill()
            continue
        if isinstance(reply, Exception):
            raise reply
        out.append(reply)
    return out
