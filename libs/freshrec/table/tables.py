"""The three tables every process uses, typed: `Tables(user, item, context, backend)`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from freshrec.errors import ConfigError
from freshrec.table.base import EmbeddingStore, TableBackend
from freshrec.table.config import TablesConfig
from freshrec.table.hashing import HashingTrickStore

__all__ = ["TABLE_NAMES", "Tables", "open_tables"]

TABLE_NAMES = ("user", "item", "context")


@dataclass(frozen=True)
class Tables:
    """The `user`, `item` and `context` stores, all on `backend` so one transaction spans them.

    Iterating yields the stores (user, item, context); `get` looks one up by table name, for
    callers that take the name from outside (an operator's URL).
    """

    user: EmbeddingStore
    item: EmbeddingStore
    context: EmbeddingStore
    backend: TableBackend

    def __iter__(self) -> Iterator[EmbeddingStore]:
        return iter((self.user, self.item, self.context))

    def __len__(self) -> int:
        return len(TABLE_NAMES)

    def get(self, name: str) -> EmbeddingStore | None:
        """The store of table `name`, None when there is no such table."""
        return self.by_name().get(name)

    def names(self) -> list[str]:
        """The table names, in iteration order."""
        return [store.config.name for store in self]

    def by_name(self) -> dict[str, EmbeddingStore]:
        """Table name → store (for code written against name-keyed tables)."""
        return {store.config.name: store for store in self}


def open_tables(
    tables: TablesConfig,
    backend: TableBackend,
    *,
    hashing_buckets: Mapping[str, int] | int | None = None,
) -> Tables:
    """The `user`, `item` and `context` stores of `tables` on `backend`.

    Args:
        tables: the table config (must define `user`, `item` and `context`).
        backend: where the rows live.
        hashing_buckets: wrap stores in the ``id % buckets`` baseline (evaluation only): one
            modulus for every table, or per table name (tables not named stay collisionless).

    Raises:
        ConfigError: a required table is missing from `tables`.
    """
    configs = {t.name: t for t in tables.tables}
    missing = [name for name in TABLE_NAMES if name not in configs]
    if missing:
        raise ConfigError(f"table config lacks tables {missing}")

    def one(name: str) -> EmbeddingStore:
        store = backend.store(configs[name])
        buckets = (
            hashing_buckets.get(name) if isinstance(hashing_buckets, Mapping) else hashing_buckets
        )
        return store if buckets is None else HashingTrickStore(store, buckets)

    return Tables(user=one("user"), item=one("item"), context=one("context"), backend=backend)
