"""Item names are resolved once; a row without a name is asked for again only later."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from freshrec.models.published import ITEM_NAMES_KEY
from freshrec.ranking.recommender import store_name_resolver
from freshrec.table import InMemoryTableBackend


class _CountingBackend(InMemoryTableBackend):
    asked: list[list[str]]

    def get_hash_fields(
        self, key: str, fields: Sequence[str], *, group: str | None = None
    ) -> list[bytes | None]:
        self.asked.append(list(fields))
        return super().get_hash_fields(key, fields, group=group)


def test_names_are_cached_and_missing_names_retried_after_a_while() -> None:
    backend = _CountingBackend()
    backend.asked = []
    with backend.transaction() as txn:
        txn.put_hash(ITEM_NAMES_KEY, {"1": "one"})
    now = [100.0]
    resolve = store_name_resolver(backend, retry_missing_s=10.0, clock=lambda: now[0])
    ids = np.array([1, 2, 1], dtype=np.uint64)
    assert resolve(ids) == ["one", None, "one"]
    assert backend.asked == [["1", "2"]]  # each id asked once, duplicates folded
    now[0] += 5.0
    assert resolve(ids) == ["one", None, "one"]
    assert backend.asked == [["1", "2"]]  # neither the name nor the miss is asked again
    with backend.transaction() as txn:
        txn.put_hash(ITEM_NAMES_KEY, {"2": "two"})
    now[0] += 5.0
    assert resolve(ids) == ["one", "two", "one"]
    assert backend.asked == [["1", "2"], ["2"]]
