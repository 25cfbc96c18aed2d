"""The Redis table backend and stores: a key per row, or rows packed into hashes; all batched.

`RedisTableBackend` (`backend`) opens the tables on a `RedisConnection` (`connection`: client,
namespace, metadata, the MULTI/EXEC `RedisTransaction`); `RedisEmbeddingStore` (`store`) is one
table, with its expiry walk in `expiry` and its key names and id packing in `keys`;
`PackedRedisEmbeddingStore` (`packed`) is a table whose rows live in small hashes.
"""

from __future__ import annotations

from freshrec.table.redis.backend import RedisTableBackend
from freshrec.table.redis.connection import RedisConnection, RedisTransaction
from freshrec.table.redis.packed import PackedRedisEmbeddingStore
from freshrec.table.redis.store import KEY_OVERHEAD_BYTES, RedisEmbeddingStore, RedisPulled

__all__ = [
    "KEY_OVERHEAD_BYTES",
    "PackedRedisEmbeddingStore",
    "RedisConnection",
    "RedisEmbeddingStore",
    "RedisPulled",
    "RedisTableBackend",
    "RedisTransaction",
]
