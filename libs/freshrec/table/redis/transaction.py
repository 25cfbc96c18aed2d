"""The Redis transaction: one MULTI/EXEC of commands staged as RESP bytes."""

from __future__ import annotations

from collections.abc import Mapping

import redis

from freshrec.errors import InvalidInput, StoreUnavailable
from freshrec.table.base import Transaction
from freshrec.table.resp import EXEC, MULTI, execute_packed, pack_command

__all__ = ["RedisTransaction", "meta_key"]


def meta_key(namespace: str, key: str) -> str:
    """The Redis key of metadata hash or blob `key` (``ns:meta:<key>``)."""
    return f"{namespace}:meta:{key}"


class RedisTransaction(Transaction):
    """A MULTI/EXEC pipeline: staged commands are sent and applied together at commit.

    Any `RedisEmbeddingStore` sharing this transaction's client (or its connection pool) can
    stage into it, so one commit spans several tables and the caller's metadata. A single
    Redis server is one shard: MULTI/EXEC makes every staged command atomic, whatever `group`.

    Args:
        client: a `redis.Redis` with ``decode_responses=False``.
        namespace: prefix of every key this deployment owns.
        group: the commit group (a label on a single server).
    """

    def __init__(self, client: redis.Redis, namespace: str, group: str | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.group = group
        self._chunks: list[bytes] = []
        self._commands = 0

    def stage_packed(self, chunk: bytes, commands: int) -> None:
        """Stage `commands` RESP-encoded commands (see `freshrec.table.resp`)."""
        self._chunks.append(chunk)
        self._commands += commands

    def stage(self, *args: bytes | str | int | float) -> None:
        """Stage one command, e.g. ``stage("HINCRBY", key, "rows", 3)``."""
        self.stage_packed(pack_command(args), 1)

    def _meta(self, key: str) -> str:
        return meta_key(self.namespace, key)

    def put_hash(self, key: str, mapping: Mapping[str, bytes | str | int | float]) -> None:
        if any(isinstance(v, bool) for v in mapping.values()):
            raise InvalidInput("booleans are not valid hash values; use 0/1")
        if mapping:
            self.stage("HSET", self._meta(key), *(x for kv in mapping.items() for x in kv))

    def put_blob(self, key: str, value: bytes) -> None:
        self.stage("SET", self._meta(key), bytes(value))

    def commit(self) -> None:
        chunks, commands = self._chunks, self._commands
        self.discard()
        if not commands:
            return
        try:
            replies = execute_packed(self.client, [MULTI, *chunks, EXEC], commands + 2)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis transaction failed: {exc}") from exc
        results = replies[-1]
        if results is None:
            raise StoreUnavailable("Redis transaction was aborted")
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise StoreUnavailable(
                f"Redis transaction had {len(failed)} failing commands: {failed[0]}"
            )

    def discard(self) -> None:
        self._chunks = []
        self._commands = 0
