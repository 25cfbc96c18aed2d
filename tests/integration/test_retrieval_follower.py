"""`IndexFollower` on the real Redis store: the same scenarios as the in-memory unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from freshrec.retrieval import ExactRetriever, IndexFollower
from freshrec.table.redis import RedisEmbeddingStore, RedisTableBackend
from tests.scenarios import retrieval_follower as sc


@pytest.fixture
def store(redis_client: redis.Redis, namespace: str) -> RedisEmbeddingStore:
    return RedisTableBackend(redis_client, namespace).store(sc.item_table())


def test_new_item_is_searchable_after_poll_once(store: RedisEmbeddingStore) -> None:
    sc.new_item_is_searchable_after_poll_once(store)


def test_expired_item_is_never_returned(store: RedisEmbeddingStore) -> None:
    sc.expired_item_is_never_returned(store)


def test_background_thread_makes_new_items_searchable(store: RedisEmbeddingStore) -> None:
    sc.background_thread_makes_new_items_searchable(store)


def test_restart_from_snapshot_does_not_start_empty(
    store: RedisEmbeddingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc.restart_from_snapshot_does_not_start_empty(store, tmp_path / "snap", monkeypatch)


def test_cursor_off_the_trimmed_stream_rebuilds_from_export(
    redis_client: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    store = RedisTableBackend(redis_client, namespace).store(sc.item_table(), feed_maxlen=5)
    sc.background(store, n=40)
    first = IndexFollower(store, ExactRetriever(sc.DIM), tmp_path)
    first.bootstrap()
    first.snapshot()
    for i in range(300):  # MAXLEN ~ trims whole stream nodes (100 entries by default)
        sc.write(store, [10_000 + i], sc.axis(i % sc.DIM), sc.T0)

    def stream_id(cursor: str) -> tuple[int, ...]:
        return tuple(int(part) for part in cursor.split("-"))

    assert stream_id(store.changes("0", count=1)[0].cursor) > stream_id(first.cursor)
    restarted = IndexFollower(store, ExactRetriever(sc.DIM), tmp_path)
    assert restarted.bootstrap() == "export"
    assert len(restarted.retriever) == 340


def test_mirror_holds_what_the_index_holds(store: RedisEmbeddingStore, tmp_path: Path) -> None:
    sc.mirror_holds_what_the_index_holds(store, tmp_path / "snap")


def test_split_index_follows_the_table(store: RedisEmbeddingStore, tmp_path: Path) -> None:
    sc.split_index_follows_the_table(store, tmp_path / "snap")
