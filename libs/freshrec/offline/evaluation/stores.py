"""`RunStores`: each evaluation run's tables on a fresh backend, removed afterwards."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Literal

import redis

from freshrec.errors import ConfigError, StoreUnavailable
from freshrec.table import (
    InMemoryTableBackend,
    RedisTableBackend,
    TableBackend,
    Tables,
    TablesConfig,
    open_tables,
)

__all__ = ["RunStores", "StoreKind"]

logger = logging.getLogger(__name__)

StoreKind = Literal["memory", "redis"]


class RunStores:
    """Opens each run's tables on a fresh backend and removes them afterwards.

    Args:
        kind: `memory` (in-process tables) or `redis`.
        redis_url: the Redis to use with `kind="redis"`.
        prefix: namespace prefix of every run (default: a fresh random one).

    Raises:
        ConfigError: an unknown `kind`, or `redis` without a URL.
        StoreUnavailable: Redis does not answer.
    """

    def __init__(self, kind: StoreKind, redis_url: str | None, prefix: str | None = None) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.client: redis.Redis | None = None
        self.prefix = prefix or f"freshrec-eval-{uuid.uuid4().hex[:10]}"
        if kind == "redis":
            if not redis_url:
                raise ConfigError("store='redis' needs a redis_url")
            self.client = redis.Redis.from_url(redis_url, decode_responses=False)
            try:
                self.client.ping()
            except redis.RedisError as exc:
                raise StoreUnavailable(f"Redis at {redis_url} does not answer: {exc}") from exc
        elif kind != "memory":
            raise ConfigError(f"unknown store {kind!r}; use 'memory' or 'redis'")

    @contextlib.contextmanager
    def open(
        self, run: str, tables: TablesConfig, buckets: Mapping[str, int] | None = None
    ) -> Iterator[Tables]:
        """The tables of run `run`, empty, for the `with` block; removed after it.

        Args:
            run: the run's name, part of its namespace.
            tables: the table definitions.
            buckets: tables to wrap in a hashing-trick store, with their bucket counts.

        Yields:
            The run's tables, on one backend.
        """
        namespace = f"{self.prefix}-{run}"
        backend: TableBackend = (
            InMemoryTableBackend(namespace)
            if self.client is None
            else RedisTableBackend(self.client, namespace)
        )
        try:
            yield open_tables(tables, backend, hashing_buckets=buckets)
        finally:
            if self.client is not None:
                self._wipe(namespace)

    def _wipe(self, namespace: str) -> None:
        assert self.client is not None
        try:
            keys = list(self.client.scan_iter(match=f"{namespace}:*".encode(), count=10_000))
            for start in range(0, len(keys), 10_000):
                self.client.unlink(*keys[start : start + 10_000])
        except redis.RedisError as exc:
            logger.warning("could not remove evaluation keys %s:*: %s", namespace, exc)

    def close(self) -> None:
        """Close the Redis connection, if any."""
        if self.client is not None:
            self.client.close()
