"""The Redis table backend: the connection plus the tables opened on it."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from freshrec.table.config import TableConfig
from freshrec.table.redis.connection import RedisConnection
from freshrec.table.redis.packed import PackedRedisEmbeddingStore
from freshrec.table.redis.store import RedisEmbeddingStore

__all__ = ["RedisTableBackend"]


class RedisTableBackend(RedisConnection):
    """A single Redis server holding the tables of one namespace (`Atomicity.BACKEND`).

    Args:
        client: a `redis.Redis` with ``decode_responses=False`` (rows are binary).
        namespace: prefix of every key this deployment owns.
        owns_client: `close` closes `client` (True when the backend opened it itself).
    """

    @classmethod
    def from_url(
        cls, url: str, namespace: str = "freshrec", *, socket_timeout_s: float | None = None
    ) -> RedisTableBackend:
        """A backend over a new client for `url`, closed with the backend."""
        client = redis.Redis.from_url(url, socket_timeout=socket_timeout_s)
        return cls(client, namespace, owns_client=True)

    def store(
        self,
        config: TableConfig,
        *,
        feed_maxlen: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> RedisEmbeddingStore:
        """The store of table `config.name` (see `RedisEmbeddingStore` for the arguments).

        A table with ``layout: packed`` opens as a `PackedRedisEmbeddingStore`.
        """
        kind = PackedRedisEmbeddingStore if config.layout == "packed" else RedisEmbeddingStore
        return kind(self, config, feed_maxlen=feed_maxlen, clock=clock)
