"""In-memory tables holding a small random catalog and its users, for serving tests."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from freshrec.models.published import ITEM_NAMES_KEY
from freshrec.settings import default_table_config_path
from freshrec.table import (
    InMemoryTableBackend,
    Tables,
    hash_features,
    load_tables,
    open_tables,
)
from freshrec.table.base import Rows

T0 = 1_750_000_000.0
"""Event time of every seeded row."""


def random_rows(ids: np.ndarray, dim: int, rng: np.random.Generator) -> Rows:
    """Rows for `ids` with standard-normal vectors `(N, D)`, seen three times at `T0`."""
    n = ids.shape[0]
    return Rows(
        ids=ids,
        vectors=rng.standard_normal((n, dim)).astype(np.float32),
        state=np.zeros((n, dim), dtype=np.float32),
        event_time=np.full(n, T0),
        wall_time=np.full(n, time.time() - 5.0),
        count=np.full(n, 3, dtype=np.int64),
    )


def seeded_tables(items: Sequence[str], users: Sequence[str], seed: int) -> Tables:
    """The bundled tables in memory (one backend), with rows and names for `items` and rows
    for `users`."""
    rng = np.random.default_rng(seed)
    tables = open_tables(load_tables(default_table_config_path()), InMemoryTableBackend())
    dim = tables.item.config.dim
    item_ids = hash_features("item", list(items))
    tables.item.import_rows(random_rows(item_ids, dim, rng))
    with tables.backend.transaction() as txn:
        txn.put_hash(
            ITEM_NAMES_KEY, {str(int(i)): name for i, name in zip(item_ids, items, strict=True)}
        )
    tables.user.import_rows(random_rows(hash_features("user", list(users)), dim, rng))
    return tables
