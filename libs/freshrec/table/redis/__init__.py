"""The Redis table backend and store: one key per row, every operation batched and pipelined.

`RedisTableBackend` (`backend`) opens the tables on a `RedisConnection` (`connection`: client,
namespace, metadata, the MULTI/EXEC `RedisTransaction`); `RedisEmbeddingStore` (`store`) is one
table, with its expiry walk in `expiry` and its key names and id packing in `keys`.
"""

from __future__ import annotations

from freshrec.table.redis.backend import RedisTableBackend
from freshrec.table.redis.connection import RedisConnection, RedisTransaction
from freshrec.table.redis.store import KEY_OVERHEAD_BYTES, RedisEmbeddingStore, RedisPulled

__all__ = [
    "KEY_OVERHEAD_BYTES",
    "RedisConnection",
    "RedisEmbeddingStore",
    "RedisPulled",
    "RedisTableBackend",
    "RedisTransaction",
]
