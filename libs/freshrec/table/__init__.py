"""The collisionless, expirable embedding table.

`TableBackend` (in `base`) is one connection and namespace — transactions, metadata,
readiness — and `EmbeddingStore` one table on it. `RedisTableBackend` / `RedisEmbeddingStore`
are production, `InMemoryTableBackend` / `InMemoryEmbeddingStore` the reference;
`HashingTrickStore` is the evaluation baseline. `open_backend` picks a backend from its config,
`open_tables` opens the typed `Tables` on it. See `docs/table.md`.
"""

from __future__ import annotations

from freshrec.table.admission import AdmissionDecision, decide_admission
from freshrec.table.backends import (
    BackendConfig,
    MemoryBackendConfig,
    RedisBackendConfig,
    open_backend,
)
from freshrec.table.base import (
    Atomicity,
    Change,
    ChangeOp,
    EmbeddingStore,
    FloatArray,
    IdArray,
    LookupResult,
    Pulled,
    Rows,
    TableBackend,
    TableStats,
    Transaction,
    UpdateResult,
)
from freshrec.table.config import TableConfig, TablesConfig, load_tables
from freshrec.table.hashing import CollisionStats, HashingTrickStore
from freshrec.table.ids import as_ids, context_ids, hash_feature, hash_features
from freshrec.table.initializers import initial_vectors
from freshrec.table.memory import InMemoryEmbeddingStore, InMemoryTableBackend, InMemoryTransaction
from freshrec.table.optimizers import Optimizer, make_optimizer
from freshrec.table.redis import (
    RedisEmbeddingStore,
    RedisPulled,
    RedisTableBackend,
    RedisTransaction,
)
from freshrec.table.snapshot import restore_snapshot, save_snapshot
from freshrec.table.tables import TABLE_NAMES, Tables, open_tables

__all__ = [
    "TABLE_NAMES",
    "AdmissionDecision",
    "Atomicity",
    "BackendConfig",
    "Change",
    "ChangeOp",
    "CollisionStats",
    "EmbeddingStore",
    "FloatArray",
    "HashingTrickStore",
    "IdArray",
    "InMemoryEmbeddingStore",
    "InMemoryTableBackend",
    "InMemoryTransaction",
    "LookupResult",
    "MemoryBackendConfig",
    "Optimizer",
    "Pulled",
    "RedisBackendConfig",
    "RedisEmbeddingStore",
    "RedisPulled",
    "RedisTableBackend",
    "RedisTransaction",
    "Rows",
    "TableBackend",
    "TableConfig",
    "TableStats",
    "Tables",
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
    "open_backend",
    "open_tables",
    "restore_snapshot",
    "save_snapshot",
]
