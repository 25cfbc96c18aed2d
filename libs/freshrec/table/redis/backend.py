"""The Redis backend: one client and namespace, metadata, transactions, the tables on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import redis

from freshrec.errors import ConfigError, StoreUnavailable
from freshrec.table.base import Atomicity, TableBackend
from freshrec.table.config import TableConfig
from freshrec.table.redis.store import TABLE_OP_SECONDS, RedisEmbeddingStore
from freshrec.table.redis.transaction import RedisTransaction, meta_key

__all__ = ["RedisTableBackend"]

T = TypeVar("T")


class RedisTableBackend(TableBackend):
    """A single Redis server: one shard, so every MULTI/EXEC is atomic (`Atomicity.BACKEND`).

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
            raise ConfigError("RedisTableBackend needs a client with decode_responses=False")
        self.client = client
        self.namespace = namespace
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls, url: str, namespace: str = "freshrec", *, socket_timeout_s: float | None = None
    ) -> RedisTableBackend:
        """A backend over a new client for `url`, closed with the backend."""
        client = redis.Redis.from_url(url, socket_timeout=socket_timeout_s)
        return cls(client, namespace, owns_client=True)

    def _run(self, op: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis failed during {op}: {exc}") from exc
        finally:
            TABLE_OP_SECONDS.labels("meta", op).observe(time.perf_counter() - started)

    def transaction(self, group: str | None = None) -> RedisTransaction:
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

    def store(
        self,
        config: TableConfig,
        *,
        feed_maxlen: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> RedisEmbeddingStore:
        """The store of table `config.name` (see `RedisEmbeddingStore` for the arguments)."""
        return RedisEmbeddingStore(self, config, feed_maxlen=feed_maxlen, clock=clock)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
