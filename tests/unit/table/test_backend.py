"""The backend seam on the in-memory backend: configs, `open_backend`, `open_tables`,
transactions and metadata (no servers)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from freshrec.errors import ConfigError, InvalidInput
from freshrec.settings import CommonSettings, default_table_config_path
from freshrec.table import (
    Atomicity,
    BackendConfig,
    HashingTrickStore,
    InMemoryEmbeddingStore,
    InMemoryTableBackend,
    MemoryBackendConfig,
    RedisBackendConfig,
    RedisTableBackend,
    TablesConfig,
    load_tables,
    open_backend,
    open_tables,
)
from freshrec.table.config import TableConfig


def _ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_backend_config_is_picked_by_its_type() -> None:
    adapter: TypeAdapter[RedisBackendConfig | MemoryBackendConfig] = TypeAdapter(BackendConfig)
    redis_config = adapter.validate_python(
        {"type": "redis", "url": "redis://h:1/2", "namespace": "ns", "socket_timeout_s": 1.5}
    )
    assert redis_config == RedisBackendConfig(
        url="redis://h:1/2", namespace="ns", socket_timeout_s=1.5
    )
    assert isinstance(adapter.validate_python({"type": "memory"}), MemoryBackendConfig)
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "cassandra"})
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "redis", "socket_timeout_s": 0})


def test_open_backend_opens_the_configured_implementation() -> None:
    memory = open_backend(MemoryBackendConfig(namespace="m"))
    assert isinstance(memory, InMemoryTableBackend) and memory.namespace == "m"
    assert memory.atomicity is Atomicity.BACKEND and memory.ping()
    memory.close()
    # no round trip: a client is built, nothing is sent until the first command
    redis_backend = open_backend(RedisBackendConfig(url="redis://127.0.0.1:1/0", namespace="r"))
    assert isinstance(redis_backend, RedisTableBackend)
    assert redis_backend.namespace == "r" and redis_backend.atomicity is Atomicity.BACKEND
    redis_backend.close()


def test_settings_name_the_redis_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_REDIS_URL", "redis://cache:6380/3")
    monkeypatch.setenv("FRESHREC_NAMESPACE", "shop")
    config = CommonSettings().table_backend(socket_timeout_s=2.0)
    assert config == RedisBackendConfig(
        url="redis://cache:6380/3", namespace="shop", socket_timeout_s=2.0
    )


def test_open_tables_types_the_three_tables() -> None:
    backend = InMemoryTableBackend()
    tables = open_tables(load_tables(default_table_config_path()), backend)
    assert [s.config.name for s in tables] == ["user", "item", "context"] == tables.names()
    assert len(tables) == 3 and tables.backend is backend
    assert all(isinstance(s, InMemoryEmbeddingStore) and s.backend is backend for s in tables)
    assert tables.get("item") is tables.item and tables.get("nope") is None
    assert tables.by_name() == {"user": tables.user, "item": tables.item, "context": tables.context}
    with pytest.raises(ConfigError, match="context"):
        open_tables(TablesConfig(tables=[TableConfig(name="user", dim=2)]), backend)


def test_open_tables_wraps_the_hashing_baseline() -> None:
    config = load_tables(default_table_config_path())
    per_table = open_tables(config, InMemoryTableBackend(), hashing_buckets={"item": 7})
    assert isinstance(per_table.item, HashingTrickStore) and per_table.item.buckets == 7
    assert not isinstance(per_table.user, HashingTrickStore)
    everywhere = open_tables(config, InMemoryTableBackend(), hashing_buckets=5)
    assert all(isinstance(s, HashingTrickStore) for s in everywhere)
    assert everywhere.user.backend is everywhere.backend


def test_transaction_commits_metadata_and_rows_together_or_not_at_all() -> None:
    backend = InMemoryTableBackend()
    tables = open_tables(load_tables(default_table_config_path()), backend)
    grads = np.ones((1, tables.user.config.dim), np.float32)
    with pytest.raises(RuntimeError), backend.transaction(group="g") as txn:
        txn.put_hash("offsets:g", {"events:0": 7})
        tables.user.apply_gradients(_ids(1), grads, 1.0, txn=txn)
        raise RuntimeError("crash before commit")
    assert backend.get_hash("offsets:g", group="g") == {}
    assert not tables.user.lookup(_ids(1)).exists[0]

    with backend.transaction(group="g") as txn:
        assert txn.group == "g"
        txn.put_hash("offsets:g", {"events:0": 7, "events:1": 2.5})
        txn.put_blob("checkpoint:g", b"\x00state")
        tables.user.apply_gradients(_ids(1), grads, 1.0, txn=txn)
        tables.item.apply_gradients(_ids(2), grads, 1.0, txn=txn)
        # nothing is visible before the commit
        assert backend.get_blob("checkpoint:g") is None
        assert not tables.item.lookup(_ids(2)).exists[0]
    assert backend.get_hash("offsets:g", group="g") == {"events:0": b"7", "events:1": b"2.5"}
    assert backend.get_hash_fields("offsets:g", ["events:1", "absent"]) == [b"2.5", None]
    assert backend.get_blob("checkpoint:g", group="g") == b"\x00state"
    assert tables.user.lookup(_ids(1)).exists[0] and tables.item.lookup(_ids(2)).exists[0]
    # a single-node backend is one shard: the group is a label, not a boundary
    with backend.transaction(group="other") as txn:
        txn.put_blob("published", b"model")
    assert backend.get_blob("published") == b"model"


def test_metadata_values_follow_redis_conversions() -> None:
    backend = InMemoryTableBackend()
    txn = backend.transaction()
    with pytest.raises(InvalidInput, match="booleans"):
        txn.put_hash("h", {"flag": True})
    txn.discard()
    txn.commit()  # nothing staged: nothing happens
    assert backend.get_hash("h") == {} and backend.get_hash_fields("h", []) == []


def test_a_store_refuses_a_transaction_of_another_backend() -> None:
    config = TableConfig(name="t", dim=2)
    store = InMemoryTableBackend().store(config)
    pulled = store.pull(_ids(1))
    with pytest.raises(TypeError, match="same backend"):
        store.push(
            pulled,
            np.zeros((1, 2), np.float32),
            np.ones(1, np.int64),
            np.zeros(1),
            txn=InMemoryTableBackend().transaction(),
        )
