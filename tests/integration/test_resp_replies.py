"""Long pipelines read through hiredis directly give what redis-py's `read_response` gives."""

from __future__ import annotations

import hiredis
import pytest
import redis

from freshrec.table.resp import execute_packed, pack_command, read_replies


def test_a_long_pipeline_reads_the_same_replies_either_way(
    redis_client: redis.Redis, namespace: str
) -> None:
    keys = [f"{namespace}:k{i}" for i in range(300)]
    redis_client.mset({key: b"v" * (i % 7) + bytes([i % 256]) for i, key in enumerate(keys)})
    # a mix of reply types, long enough to span several socket reads
    commands = [pack_command(["GET", key]) for key in keys]
    commands += [
        pack_command(["GET", f"{namespace}:absent"]),
        pack_command(["INCR", keys[0] + "n"]),
    ]
    commands += [pack_command(["MGET", *keys[:3]]), pack_command(["PING"])] * 40
    fast = execute_packed(redis_client, [b"".join(commands)], len(commands))

    conn = redis_client.connection_pool.get_connection()
    try:
        # the fast path is the one taken on this connection
        assert isinstance(conn._parser._reader, hiredis.Reader)  # type: ignore[attr-defined]
        conn.send_packed_command([b"".join(commands)])
        slow = [conn.read_response() for _ in commands]
    finally:
        redis_client.connection_pool.release(conn)
    assert fast[: len(keys)] == slow[: len(keys)] == redis_client.mget(keys)
    assert fast[len(keys)] is None
    assert fast[len(keys) + 1] == 1 and slow[len(keys) + 1] == 2  # each INCR ran once
    assert fast[len(keys) + 2 :] == slow[len(keys) + 2 :]


def test_an_error_reply_in_a_long_pipeline_raises_and_the_connection_is_dropped(
    redis_client: redis.Redis, namespace: str
) -> None:
    redis_client.set(f"{namespace}:s", b"x")
    commands = [pack_command(["GET", f"{namespace}:s"])] * 100
    commands[70] = pack_command(["HGET", f"{namespace}:s", "f"])  # WRONGTYPE
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        execute_packed(redis_client, [b"".join(commands)], len(commands))
    # the connection with unread replies was dropped: the next command reads its own reply
    assert redis_client.get(f"{namespace}:s") == b"x"


def test_a_parser_without_hiredis_goes_through_read_response() -> None:
    class Plain:
        """A connection whose parser is not hiredis's: only `read_response` is used."""

        def __init__(self, replies: list[bytes]) -> None:
            self._parser = object()
            self.replies = replies

        def read_response(self) -> bytes:
            return self.replies.pop(0)

    replies = [b"r%d" % i for i in range(100)]
    assert read_replies(Plain(list(replies)), 100) == replies
