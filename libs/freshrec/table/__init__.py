"""The collisionless, expirable embedding table.

`EmbeddingStore` (in `base`) is the interface; `RedisEmbeddingStore` is the production store
and `InMemoryEmbeddingStore` the reference one; `HashingTrickStore` is the evaluation baseline.
`open_store` / `open_stores` build stores from table configs. See `docs/table.md`.
"""

from __future__ import annotations

import redis

from freshrec.table.admission import AdmissionDecision, decide_admission
from freshrec.table.base import (
    Change,
    ChangeOp,
    EmbeddingStore,
    FloatArray,
    IdArray,
    LookupResult,
    Pulled,
    Rows,
    TableStats,
    Transaction,
    UpdateResult,
)
from freshrec.table.config import TableConfig, TablesConfig, load_tables
from freshrec.table.hashing import CollisionStats, HashingTrickStore
from freshrec.table.ids import as_ids, context_ids, hash_feature, hash_features
from freshrec.table.initializers import initial_vectors
from freshrec.table.memory import InMemoryBackend, InMemoryEmbeddingStore, InMemoryTransaction
from freshrec.table.optimizers import Optimizer, make_optimizer
from freshrec.table.redis import RedisEmbeddingStore, RedisPulled, RedisTransaction
from freshrec.table.snapshot import restore_snapshot, save_snapshot

__all__ = [
    "AdmissionDecision",
    "Change",
    "ChangeOp",
    "CollisionStats",
    "EmbeddingStore",
    "FloatArray",
    "HashingTrickStore",
    "IdArray",
    "InMemoryBackend",
    "InMemoryEmbeddingStore",
    "InMemoryTransaction",
    "LookupResult",
    "Optimizer",
    "Pulled",
    "RedisEmbeddingStore",
    "RedisPulled",
    "RedisTransaction",
    "Rows",
    "TableConfig",
    "TableStats",
    "TablesConfig",
    "Transaction",
    "UpdateResult",
    "as_ids",
    "context_ids",
    "decide_admission",
    "hash_feature",
    "hash_features",
    "initial_vectors",
    "load_tables",
    "make_optimizer",
    "open_store",
    "open_stores",
    "restore_snapshot",
    "save_snapshot",
]


def open_store(
    config: TableConfig,
    *,
    client: redis.Redis | None = None,
    namespace: str = "freshrec",
    backend: InMemoryBackend | None = None,
    hashing_buckets: int | None = None,
) -> EmbeddingStore:
    """A store for one table: Redis when `client` is given, else in memory.

    Args:
        config: the table.
        client: Redis client (``decode_responses=False``); None for the in-memory store.
        namespace: key prefix in Redis.
        backend: in-memory registry to share between tables (ignored with `client`).
        hashing_buckets: wrap the store in the ``id % buckets`` baseline (evaluation only).
    """
    store: EmbeddingStore
    if client is not None:
        store = RedisEmbeddingStore(client, namespace, config)
    else:
        store = InMemoryEmbeddingStore(config, backend)
    if hashing_buckets is not None:
        store = HashingTrickStore(store, hashing_buckets)
    return store


def open_stores(
    tables: TablesConfig,
    *,
    client: redis.Redis | None = None,
    namespace: str = "freshrec",
) -> dict[str, EmbeddingStore]:
    """One store per table of `tables`, all on one backend so a transaction spans them."""
    backend = InMemoryBackend() if client is None else None
    return {
        t.name: open_store(t, client=client, namespace=namespace, backend=backend)
        for t in tables.tables
    }
