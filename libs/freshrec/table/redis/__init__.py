"""The Redis table backend and store: one key per row, every operation batched and pipelined.

`RedisTableBackend` (`backend`) holds the client, namespace, metadata and transactions;
`RedisEmbeddingStore` (`store`) is one table on it, with its expiry walk in `expiry`, its key
names and id packing in `keys`, and the MULTI/EXEC in `transaction`.
"""

from __future__ import annotations

from freshrec.table.redis.backend import RedisTableBackend
from freshrec.table.redis.store import KEY_OVERHEAD_BYTES, RedisEmbeddingStore, RedisPulled
from freshrec.table.redis.transaction import RedisTransaction

__all__ = [
    "KEY_OVERHEAD_BYTES",
    "RedisEmbeddingStore",
    "RedisPulled",
    "RedisTableBackend",
    "RedisTransaction",
]
