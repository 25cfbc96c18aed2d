"""The Redis connection of the table backend: MULTI/EXEC transactions, metadata, readiness."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import redis
from prometheus_client import Histogram

from freshrec.errors import CommitConflict, ConfigError, InvalidInput, StoreUnavailable
from freshrec.metrics import LATENCY_BUCKETS_S
from freshrec.table.base import Atomicity, TableBackend, Transaction
from freshrec.table.resp import EXEC, MULTI, execute_packed, pack_command

__all__ = ["FENCE_ATTEMPTS", "TABLE_OP_SECONDS", "RedisConnection", "RedisTransaction", "meta_key"]

T = TypeVar("T")

TABLE_OP_SECONDS = Histogram(
    "freshrec_table_op_duration_seconds",
    "Time one batched table operation took against Redis, by table and operation.",
    ["table", "op"],
    buckets=LATENCY_BUCKETS_S,
)


def meta_key(namespace: str, key: str) -> str:
    """The Redis key of metadata hash or blob `key` (``ns:meta:<key>``)."""
    return f"{namespace}:meta:{key}"


# A fenced commit whose EXEC other writers' writes to the watched hashes keep aborting is tried
# this often, the expected fields checked each time, before it counts as a conflict.
FENCE_ATTEMPTS = 16


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
        self._expect: list[tuple[str, dict[str, int | None]]] = []

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

    def put_blob_range(self, key: str, start: int, data: bytes) -> None:
        if start < 0:
            raise InvalidInput("a blob range starts at byte 0 or later")
        self.stage("SETRANGE", self._meta(key), start, bytes(data))

    def expect_hash(self, key: str, fields: Mapping[str, int | None]) -> None:
        if fields:
            self._expect.append((self._meta(key), dict(fields)))

    def watch_expected(self, conn: Any) -> bool:
        """WATCH the expected hashes on `conn` and check them (before MULTI on `conn`).

        Returns:
            Whether anything is watched (an EXEC that then returns nil was fenced off).

        Raises:
            CommitConflict: an expected field holds another value now (nothing is watched).
        """
        if not self._expect:
            return False
        commands = [pack_command(["WATCH", *(key for key, _ in self._expect)])]
        commands += [pack_command(["HMGET", key, *fields]) for key, fields in self._expect]
        conn.send_packed_command(commands)
        conn.read_response()
        for key, fields in self._expect:
            found = conn.read_response()
            for (field, want), got in zip(fields.items(), found, strict=True):
                have = None if got is None else int(got)
                if have != want:
                    conn.send_packed_command([pack_command(["UNWATCH"])])
                    conn.read_response()
                    raise CommitConflict(
                        f"{key} field {field} is {have}, this commit expected {want}"
                    )
        return True

    def commit(self) -> None:
        chunks, commands = self._chunks, self._commands
        expected = bool(self._expect)
        try:
            if not commands:
                return
            if expected:
                replies = self._fenced(chunks, commands)
            else:
                replies = execute_packed(self.client, [MULTI, *chunks, EXEC], commands + 2)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis transaction failed: {exc}") from exc
        finally:
            self.discard()
        results = replies[-1]
        if results is None:
            if expected:
                raise CommitConflict("an expected hash changed during the commit")
            raise StoreUnavailable("Redis transaction was aborted")
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise StoreUnavailable(
                f"Redis transaction had {len(failed)} failing commands: {failed[0]}"
            )

    def _fenced(self, chunks: list[bytes], commands: int) -> list[Any]:
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            for _ in range(FENCE_ATTEMPTS):
                self.watch_expected(conn)  # CommitConflict when an expected field moved on
                conn.send_packed_command([MULTI, *chunks, EXEC])  # type: ignore[no-untyped-call]
                replies = [conn.read_response() for _ in range(commands + 2)]
                if replies[-1] is not None:
                    return replies
                # another writer wrote a watched hash; the expected fields may still hold
            return replies
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)

    def discard(self) -> None:
        self._chunks = []
        self._commands = 0
        self._expect = []


class RedisConnection(TableBackend):
    """A Redis client and namespace: transactions, metadata, readiness (the stores' base).

    A single Redis server is one shard, so every MULTI/EXEC is atomic (`Atomicity.BACKEND`).
    `RedisTableBackend` adds opening the tables.

    Args:
        client: a `redis.Redis` with ``decode_responses=False`` (rows are binary).
        namespace: prefix of every key this deployment owns.
        owns_client: `close` closes `client` (True when the backend opened it itself).
    """

    atomicity = Atomicity.BACKEND

    def __init__(
        self, client: redis.Redis, namespace: str = "freshrec", *, owns_client: bool = False
    ) -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ConfigError(f"{type(self).__name__} needs a client with decode_responses=False")
        self.client = client
        self.namespace = namespace
        self._owns_client = owns_client

    def _run(self, op: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis failed during {op}: {exc}") from exc
        finally:
            TABLE_OP_SECONDS.labels("meta", op).observe(time.perf_counter() - started)

    def transaction(
        self, group: str | None = None, *, writer: str | None = None
    ) -> RedisTransaction:
        return RedisTransaction(self.client, self.namespace, group)

    def get_hash(self, key: str, *, group: str | None = None) -> dict[str, bytes]:
        raw = self._run("get_hash", lambda: self.client.hgetall(meta_key(self.namespace, key)))
        return {k.decode(): v for k, v in cast(dict[bytes, bytes], raw).items()}

    def get_hash_fields(
        self, key: str, fields: Sequence[str], *, group: str | None = None
    ) -> list[bytes | None]:
        if not fields:
            return []
        raw = self._run(
            "get_hash_fields",
            lambda: self.client.hmget(meta_key(self.namespace, key), list(fields)),
        )
        return cast(list[bytes | None], raw)

    def get_blob(self, key: str, *, group: str | None = None) -> bytes | None:
        raw: Any = self._run("get_blob", lambda: self.client.get(meta_key(self.namespace, key)))
        return cast(bytes | None, raw)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
