"""The embedding-table contract, run against the in-memory store and against real Redis."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from freshrec.errors import SnapshotError
from freshrec.table import (
    ChangeOp,
    EmbeddingStore,
    InMemoryEmbeddingStore,
    InMemoryTableBackend,
    RedisTableBackend,
    initial_vectors,
    restore_snapshot,
    save_snapshot,
)
from freshrec.table.config import (
    AdagradConfig,
    AdamConfig,
    CountingAdmission,
    ExpiryConfig,
    FtrlConfig,
    NormalInit,
    OptimizerConfig,
    ProbabilisticAdmission,
    SgdConfig,
    TableConfig,
    ZerosInit,
)
from tests.waiting import wait_until

MakeStore = Callable[..., EmbeddingStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """Builds stores of one backend; all stores of a test share it (and its transactions)."""
    made: list[EmbeddingStore] = []
    if request.param == "memory":
        backend = InMemoryTableBackend()

        def make(config: TableConfig, **kwargs: Any) -> EmbeddingStore:
            store = InMemoryEmbeddingStore(config, backend, **kwargs)
            made.append(store)
            return store

    else:
        client: redis.Redis = request.getfixturevalue("redis_client")
        namespace: str = request.getfixturevalue("namespace")
        redis_backend = RedisTableBackend(client, namespace)

        def make(config: TableConfig, **kwargs: Any) -> EmbeddingStore:
            store = redis_backend.store(config, **kwargs)
            made.append(store)
            return store

    yield make
    for store in made:
        store.clear()


def _ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def _wait_for_clock(target: float) -> None:
    """Poll the wall clock until it passes `target` (rows expire on the wall clock)."""
    wait_until(lambda: time.time() >= target, 10.0, f"wall clock {target}", interval_s=0.01)


# ---- 1. collisionless ------------------------------------------------------------------


def _limbs(ids: np.ndarray) -> np.ndarray:
    """Four 16-bit pieces of each id as float32 (exact), so a row names the id it belongs to."""
    shifts = np.array([0, 16, 32, 48], dtype=np.uint64)
    return ((ids[:, None] >> shifts[None, :]) & np.uint64(0xFFFF)).astype(np.float32)


@functools.cache
def _million_ids() -> np.ndarray:
    rng = np.random.default_rng(1)
    special = np.unique(
        np.concatenate(
            [
                np.array([0, 1, 2**63, 2**63 + 1, 2**64 - 1, 2**64 - 2], dtype=np.uint64),
                # Equal modulo 2**20 and 2**32: a table that reduced ids would merge these rows.
                np.uint64(12345) + np.arange(1, 2001, dtype=np.uint64) * np.uint64(2**20),
                np.uint64(777) + np.arange(1, 2001, dtype=np.uint64) * np.uint64(2**32),
                np.uint64(2**63) + np.arange(1, 2001, dtype=np.uint64) * np.uint64(2**32),
            ]
        )
    )
    rand = np.unique(np.frombuffer(rng.bytes(8 * 1_001_000), dtype="<u8").astype(np.uint64))
    rand = rand[~np.isin(rand, special)][: 1_000_000 - special.shape[0]]
    ids = np.concatenate([special, rand])
    ids.flags.writeable = False
    return ids


def test_million_distinct_ids_get_distinct_rows(make_store: MakeStore) -> None:
    config = TableConfig(
        name="big", dim=4, initializer=ZerosInit(), optimizer=SgdConfig(lr=1.0), expiry=None
    )
    store = make_store(config)
    ids = np.random.default_rng(2).permutation(_million_ids())
    assert np.unique(ids).shape[0] == 1_000_000
    assert (ids >= np.uint64(2**63)).sum() > 1000
    chunk = 125_000
    for start in range(0, ids.shape[0], chunk):
        part = ids[start : start + chunk]
        pulled = store.pull(part)
        result = store.push(
            pulled,
            -_limbs(part),
            np.ones(part.shape[0], dtype=np.int64),
            np.zeros(part.shape[0]),
        )
        assert result.created == part.shape[0]
    assert store.stats().rows == 1_000_000
    for start in range(0, ids.shape[0], 250_000):
        part = ids[start : start + 250_000]
        got = store.lookup(part)
        assert got.exists.all()
        np.testing.assert_array_equal(got.vectors, _limbs(part))

    target = np.uint64(777) + np.uint64(5 * 2**32)
    partners = np.concatenate(
        [
            np.uint64(777) + np.arange(1, 2001, dtype=np.uint64) * np.uint64(2**32),
            np.array([777 % 2**20], dtype=np.uint64),
        ]
    )
    partners = partners[partners != target]
    before = store.lookup(partners)
    store.apply_gradients(np.array([target]), np.full((1, 4), -1.0, dtype=np.float32), 1.0)
    np.testing.assert_array_equal(
        store.lookup(np.array([target])).vectors, _limbs(np.array([target])) + 1.0
    )
    after = store.lookup(partners)
    np.testing.assert_array_equal(after.vectors, before.vectors)
    np.testing.assert_array_equal(after.exists, before.exists)
    assert store.stats().rows == 1_000_000


# ---- 2. optimizers against PyTorch -----------------------------------------------------

_V, _D, _STEPS, _BATCH = 40, 8, 100, 48


def _training_stream() -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(7)
    vocab = rng.integers(0, 2**64 - 1, size=_V, dtype=np.uint64, endpoint=True)
    weights = 1.0 / np.arange(1, _V + 1)
    weights /= weights.sum()
    steps = []
    for _ in range(_STEPS):
        idx = rng.choice(_V, size=_BATCH, p=weights)
        grads = rng.normal(0, 1, size=(_BATCH, _D)).astype(np.float32)
        steps.append((idx, grads))
    return vocab, steps


def _torch_reference(
    optimizer: OptimizerConfig, init: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    # Opting in to torch's sparse-tensor checks (small tensors here) keeps it from warning.
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        return _torch_train(optimizer, init, steps)


def _torch_train(
    optimizer: OptimizerConfig, init: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    if isinstance(optimizer, AdamConfig):
        # One parameter per row: SparseAdam then counts steps per row, as the table does.
        rows = [torch.nn.Embedding(1, _D, sparse=True) for _ in range(_V)]
        for i, emb in enumerate(rows):
            emb.weight.data = torch.from_numpy(init[i : i + 1].copy())
        opt: torch.optim.Optimizer = torch.optim.SparseAdam(
            [e.weight for e in rows],
            lr=optimizer.lr,
            betas=(optimizer.beta1, optimizer.beta2),
            eps=optimizer.eps,
        )
        for idx, grads in steps:
            opt.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for i in np.unique(idx):
                mask = idx == i
                out = rows[i](torch.zeros(int(mask.sum()), dtype=torch.long))
                loss = loss + (out * torch.from_numpy(grads[mask])).sum()
            loss.backward()
            opt.step()
        return np.concatenate([e.weight.detach().numpy() for e in rows])
    emb = torch.nn.Embedding(_V, _D, sparse=True)
    emb.weight.data = torch.from_numpy(init.copy())
    if isinstance(optimizer, SgdConfig):
        opt = torch.optim.SGD(emb.parameters(), lr=optimizer.lr)
    else:
        assert isinstance(optimizer, AdagradConfig)
        opt = torch.optim.Adagrad(
            emb.parameters(),
            lr=optimizer.lr,
            initial_accumulator_value=optimizer.initial_accumulator,
            eps=optimizer.eps,
        )
    for idx, grads in steps:
        opt.zero_grad()
        out = emb(torch.from_numpy(idx))
        (out * torch.from_numpy(grads)).sum().backward()
        opt.step()
    return emb.weight.detach().numpy().copy()


def _ftrl_reference(
    cfg: FtrlConfig, init: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """McMahan et al. (2013), Algorithm 1, one coordinate at a time in float64."""
    w = init.astype(np.float64).tolist()
    q0 = cfg.beta / cfg.alpha + cfg.l2

    def sign(x: float) -> float:
        return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)

    z = [[-(wi * q0 + sign(wi) * cfg.l1) for wi in row] for row in w]
    n = [[0.0] * _D for _ in range(_V)]
    for idx, grads in steps:
        summed = np.zeros((_V, _D))
        np.add.at(summed, idx, grads.astype(np.float64))
        for i in np.unique(idx).tolist():
            for j in range(_D):
                g = float(summed[i, j])
                sigma = ((n[i][j] + g * g) ** 0.5 - n[i][j] ** 0.5) / cfg.alpha
                z[i][j] += g - sigma * w[i][j]
                n[i][j] += g * g
                if abs(z[i][j]) <= cfg.l1:
                    w[i][j] = 0.0
                else:
                    denom = (cfg.beta + n[i][j] ** 0.5) / cfg.alpha + cfg.l2
                    w[i][j] = -(z[i][j] - sign(z[i][j]) * cfg.l1) / denom
    return np.array(w)


@pytest.mark.parametrize(
    "optimizer",
    [
        SgdConfig(lr=0.05),
        AdagradConfig(lr=0.1, initial_accumulator=0.1),
        AdamConfig(lr=0.01),
        FtrlConfig(alpha=0.1, beta=1.0, l1=0.01, l2=0.1),
    ],
    ids=lambda o: o.type,
)
def test_optimizers_match_reference(make_store: MakeStore, optimizer: OptimizerConfig) -> None:
    config = TableConfig(
        name="opt", dim=_D, initializer=NormalInit(std=0.1, seed=3), optimizer=optimizer
    )
    store = make_store(config)
    vocab, steps = _training_stream()
    init = initial_vectors(config.initializer, vocab, _D)
    for t, (idx, grads) in enumerate(steps):
        store.apply_gradients(vocab[idx], grads, event_time=float(t))
    got = store.lookup(vocab)
    touched = np.isin(np.arange(_V), np.concatenate([idx for idx, _ in steps]))
    assert got.exists[touched].all()
    if isinstance(optimizer, FtrlConfig):
        want = _ftrl_reference(optimizer, init, steps)
    else:
        want = _torch_reference(optimizer, init, steps)
    np.testing.assert_allclose(got.vectors, want, atol=1e-5, rtol=0)
    assert np.abs(got.vectors - init).max() > 1e-2  # training moved the rows


def test_adam_matches_sparse_adam_when_every_row_trains(make_store: MakeStore) -> None:
    config = TableConfig(
        name="adam", dim=_D, initializer=NormalInit(std=0.1, seed=4), optimizer=AdamConfig(lr=0.02)
    )
    store = make_store(config)
    vocab, steps = _training_stream()
    init = initial_vectors(config.initializer, vocab, _D)
    emb = torch.nn.Embedding(_V, _D, sparse=True)
    emb.weight.data = torch.from_numpy(init.copy())
    opt = torch.optim.SparseAdam(emb.parameters(), lr=0.02)
    every = np.arange(_V)
    for t, (_, grads) in enumerate(steps[:30]):
        g = np.resize(grads, (_V, _D)).astype(np.float32)
        opt.zero_grad()
        (emb(torch.from_numpy(every)) * torch.from_numpy(g)).sum().backward()
        opt.step()
        store.apply_gradients(vocab, g, event_time=float(t))
    np.testing.assert_allclose(
        store.lookup(vocab).vectors, emb.weight.detach().numpy(), atol=1e-5, rtol=0
    )


# ---- 3. admission ----------------------------------------------------------------------


def test_counting_filter_creates_row_on_third_occurrence(make_store: MakeStore) -> None:
    config = TableConfig(
        name="ctx",
        dim=4,
        initializer=NormalInit(std=0.1, seed=5),
        optimizer=SgdConfig(lr=0.5),
        admission=CountingAdmission(min_count=3),
    )
    store = make_store(config)
    rare, other = _ids(2**63 + 17), _ids(42)
    default = initial_vectors(config.initializer, rare, 4)
    grad = np.ones((1, 4), dtype=np.float32)
    for seen in (1, 2):
        result = store.apply_gradients(rare, grad, event_time=float(seen))
        assert result.created == 0 and result.filtered == 1 and result.written.size == 0
        looked = store.lookup(rare)
        assert not looked.exists[0]
        np.testing.assert_array_equal(looked.vectors, default)
        assert store.pull(rare).count[0] == seen
        assert len(store.read_rows(rare)) == 0
    # Two occurrences of another id in one batch count twice.
    assert store.apply_gradients(np.repeat(other, 2), np.ones((2, 4), np.float32), 1.0).filtered
    result = store.apply_gradients(rare, grad, event_time=3.0)
    assert result.created == 1 and result.filtered == 0
    row = store.read_rows(rare)
    assert row.count[0] == 3
    # Only the third update applied: the first two were dropped.
    np.testing.assert_allclose(row.vectors, default - 0.5 * grad, atol=1e-7)
    assert store.apply_gradients(other, grad, 2.0).created == 1
    stats = store.stats()
    assert (stats.rows, stats.created_total, stats.filtered_total) == (2, 2, 3)


def test_counting_filter_forgets_idle_counts_with_event_expiry(make_store: MakeStore) -> None:
    config = TableConfig(
        name="ctx",
        dim=2,
        admission=CountingAdmission(min_count=2),
        expiry=ExpiryConfig(clock="event", expire_after_s=100.0),
    )
    store = make_store(config)
    rare = _ids(99)
    grad = np.zeros((1, 2), dtype=np.float32)
    store.apply_gradients(rare, grad, event_time=10.0)
    assert store.pull(rare).count[0] == 1
    # Another id's traffic moves the table's clock two generations on.
    store.apply_gradients(_ids(1), grad, event_time=250.0)
    store.expire(250.0)
    assert store.pull(rare).count[0] == 0
    assert store.apply_gradients(rare, grad, event_time=251.0).created == 0


def test_probabilistic_filter_admits_at_configured_rate(make_store: MakeStore) -> None:
    p, n = 0.3, 20_000
    config = TableConfig(
        name="prob",
        dim=2,
        optimizer=SgdConfig(lr=0.1),
        admission=ProbabilisticAdmission(probability=p, seed=9),
    )
    store = make_store(config)
    ids = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(2**40 + 3)
    result = store.apply_gradients(ids, np.ones((n, 2), dtype=np.float32), event_time=5.0)
    admitted = result.written.shape[0]
    bound = 2.576 * (n * p * (1 - p)) ** 0.5  # 99 % two-sided normal approximation
    assert abs(admitted - n * p) <= bound, (admitted, n * p, bound)
    assert result.filtered == n - admitted
    assert store.stats().filtered_total == n - admitted
    assert store.lookup(ids).exists.sum() == admitted
    # Deterministic: the same events admit the same ids in a fresh table.
    again = make_store(config.model_copy(update={"name": "prob2"}))
    replay = again.apply_gradients(ids, np.ones((n, 2), dtype=np.float32), event_time=5.0)
    np.testing.assert_array_equal(np.sort(replay.written), np.sort(result.written))


# ---- 4. expiry -------------------------------------------------------------------------


def test_event_clock_expiry_removes_idle_rows(make_store: MakeStore) -> None:
    config = TableConfig(
        name="ev", dim=3, expiry=ExpiryConfig(clock="event", expire_after_s=1000.0)
    )
    store = make_store(config)
    grad = np.zeros((1, 3), dtype=np.float32)
    times = {1: 0.0, 2: 500.0, 3: 999.0, 4: 1000.0, 5: 1800.0}
    for i, t in times.items():
        store.apply_gradients(_ids(i), grad, event_time=t)
    store.apply_gradients(_ids(1), grad, event_time=1500.0)  # id 1 was updated again
    store.apply_gradients(_ids(2), grad, event_time=100.0)  # a late event keeps its newer time
    assert store.read_rows(_ids(2)).event_time[0] == 500.0
    cursor = store.changes("0", count=1000)[-1].cursor
    removed = store.expire(2000.0)  # cutoff 1000: rows last updated before it go
    np.testing.assert_array_equal(np.sort(removed), _ids(2, 3))
    assert store.lookup(_ids(1, 2, 3, 4, 5)).exists.tolist() == [True, False, False, True, True]
    assert store.expire(2000.0).size == 0
    assert store.stats().rows == 3 and store.stats().expired_total == 2
    first = store.changes(cursor, count=1000)
    np.testing.assert_array_equal(np.sort(store.expire(2600.5)), _ids(1, 4))
    second = store.changes(first[-1].cursor, count=1000)
    # Tombstones may come in several entries (one per index bucket visited).
    for entries, want in ((first, [2, 3]), (second, [1, 4])):
        assert {c.op for c in entries} == {ChangeOp.DELETE}
        assert sorted(i for c in entries for i in c.ids.tolist()) == want


def test_wall_clock_rows_vanish_and_updates_extend_them(make_store: MakeStore) -> None:
    config = TableConfig(name="wall", dim=2, expiry=ExpiryConfig(clock="wall", expire_after_s=1.0))
    store = make_store(config)
    grad = np.zeros((1, 2), dtype=np.float32)
    written, written_mono = time.time(), time.monotonic()
    store.apply_gradients(_ids(1, 2), np.zeros((2, 2), dtype=np.float32), event_time=1.0)
    assert store.lookup(_ids(1, 2)).exists.all()
    _wait_for_clock(written + 0.8)
    store.apply_gradients(_ids(1), grad, event_time=2.0)  # pushes id 1's expiry to >= +1.8 s
    wait_until(lambda: not store.lookup(_ids(2)).exists[0], 3.0, "row 2 to expire", interval_s=0.01)
    gone_at = time.monotonic()
    assert store.lookup(_ids(1)).exists[0], "an update must push the expiry forward"
    assert gone_at - written_mono < 3.0
    wait_until(lambda: not store.lookup(_ids(1)).exists[0], 3.0, "row 1 to expire", interval_s=0.01)
    reported: list[int] = []
    wait_until(
        lambda: bool(reported.extend(store.expire(time.time()).tolist())) or len(reported) >= 2,
        3.0,
        "expire() to report both rows",
        interval_s=0.01,
    )
    assert sorted(reported) == [1, 2]
    assert store.expire(time.time()).size == 0
    deletes = [c for c in store.changes("0", count=100) if c.op is ChangeOp.DELETE]
    assert sorted(i for c in deletes for i in c.ids.tolist()) == [1, 2]
    assert store.stats().expired_total == 2


# ---- 5. transactions and the change feed -----------------------------------------------


def _config(name: str, dim: int = 2) -> TableConfig:
    return TableConfig(name=name, dim=dim, optimizer=SgdConfig(lr=1.0), initializer=ZerosInit())


def test_transaction_is_invisible_until_commit(make_store: MakeStore) -> None:
    users, items = make_store(_config("user")), make_store(_config("item"))
    txn = users.backend.transaction()
    users.apply_gradients(_ids(1), np.ones((1, 2), np.float32), 1.0, txn=txn)
    items.apply_gradients(_ids(7), np.ones((1, 2), np.float32), 1.0, txn=txn)
    txn.put_hash("offsets", {"events:0": 41, "events:1": "9"})
    txn.put_blob("dense", b"\x00weights")
    assert not users.lookup(_ids(1)).exists[0]
    assert not items.lookup(_ids(7)).exists[0]
    assert users.backend.get_hash("offsets") == {}
    assert users.backend.get_blob("dense") is None
    assert users.changes("0") == [] and items.changes("0") == []
    assert users.stats().rows == 0
    txn.commit()
    assert users.lookup(_ids(1)).exists[0] and items.lookup(_ids(7)).exists[0]
    np.testing.assert_array_equal(items.lookup(_ids(7)).vectors, [[-1.0, -1.0]])
    assert items.backend.get_hash("offsets") == {"events:0": b"41", "events:1": b"9"}
    assert items.backend.get_blob("dense") == b"\x00weights"
    assert [c.op for c in users.changes("0")] == [ChangeOp.UPSERT]
    assert users.stats().rows == 1 and items.stats().created_total == 1


def test_transaction_discard_and_exception_drop_everything(make_store: MakeStore) -> None:
    store = make_store(_config("user"))
    txn = store.backend.transaction()
    store.apply_gradients(_ids(1), np.ones((1, 2), np.float32), 1.0, txn=txn)
    txn.put_hash("offsets", {"events:0": 1})
    txn.discard()
    txn.commit()  # nothing left to commit
    with pytest.raises(RuntimeError), store.backend.transaction() as txn2:
        store.apply_gradients(_ids(2), np.ones((1, 2), np.float32), 1.0, txn=txn2)
        txn2.put_blob("dense", b"x")
        raise RuntimeError("trainer crashed mid-batch")
    assert not store.lookup(_ids(1, 2)).exists.any()
    assert store.backend.get_hash("offsets") == {} and store.backend.get_blob("dense") is None
    assert store.changes("0") == []
    stats = store.stats()
    assert (stats.rows, stats.created_total) == (0, 0)
    with store.backend.transaction() as txn3:
        store.apply_gradients(_ids(3), np.ones((1, 2), np.float32), 1.0, txn=txn3)
    assert store.lookup(_ids(3)).exists[0]


def test_blob_ranges_extend_with_zeros_and_overwrite_in_place(make_store: MakeStore) -> None:
    backend = make_store(_config("user")).backend
    with backend.transaction(group="g") as txn:
        txn.put_blob_range("ring", 4, b"ab")
    assert backend.get_blob("ring", group="g") == b"\x00\x00\x00\x00ab"
    with backend.transaction(group="g") as txn:
        txn.put_blob_range("ring", 0, b"xy")
        txn.put_blob_range("ring", 5, b"zz")
    assert backend.get_blob("ring", group="g") == b"xy\x00\x00azz"
    txn = backend.transaction(group="g")
    txn.put_blob_range("ring", 0, b"--")
    txn.discard()
    assert backend.get_blob("ring", group="g") == b"xy\x00\x00azz"


def test_change_feed_yields_entries_in_order(make_store: MakeStore) -> None:
    config = _config("item").model_copy(
        update={"expiry": ExpiryConfig(clock="event", expire_after_s=10.0)}
    )
    store = make_store(config)
    g = np.zeros((3, 2), dtype=np.float32)
    store.apply_gradients(_ids(1, 2, 3), g, 0.0)
    store.apply_gradients(_ids(3, 4), g[:2], 5.0)
    store.expire(12.0)
    store.apply_gradients(_ids(2**64 - 1), g[:1], 13.0)
    changes = store.changes("0", count=10)
    assert [(c.op, sorted(c.ids.tolist())) for c in changes] == [
        (ChangeOp.UPSERT, [1, 2, 3]),
        (ChangeOp.UPSERT, [3, 4]),
        (ChangeOp.DELETE, [1, 2]),
        (ChangeOp.UPSERT, [2**64 - 1]),
    ]
    assert changes[3].ids.dtype == np.uint64
    rest = store.changes(changes[1].cursor, count=10)
    assert [c.cursor for c in rest] == [c.cursor for c in changes[2:]]
    assert len(store.changes("0", count=2)) == 2
    assert store.changes(changes[-1].cursor) == []
    started = time.monotonic()
    assert store.changes(changes[-1].cursor, block_ms=100) == []
    assert time.monotonic() - started >= 0.05

    # a write 0.1 s into the blocking read must wake it
    writer = threading.Timer(0.1, store.apply_gradients, args=(_ids(9), g[:1], 14.0))
    writer.start()
    try:
        woke = store.changes(changes[-1].cursor, block_ms=5000)
    finally:
        writer.join()
    assert [c.ids.tolist() for c in woke] == [[9]]


# ---- 6. snapshots ----------------------------------------------------------------------


def _trained(store: EmbeddingStore, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**64 - 1, size=3000, dtype=np.uint64, endpoint=True)
    for t in range(3):
        grads = rng.normal(size=(ids.shape[0], store.config.dim)).astype(np.float32)
        store.apply_gradients(ids, grads, event_time=100.0 + t)


def _all_rows(store: EmbeddingStore) -> dict[int, tuple[Any, ...]]:
    out: dict[int, tuple[Any, ...]] = {}
    for rows in store.export(batch_size=1000):
        for k in range(len(rows)):
            out[int(rows.ids[k])] = (
                rows.vectors[k].tobytes(),
                rows.state[k].tobytes(),
                float(rows.event_time[k]),
                int(rows.count[k]),
            )
    return out


def test_snapshot_round_trip(make_store: MakeStore, tmp_path: Path) -> None:
    user = TableConfig(name="user", dim=8, optimizer=AdagradConfig(initial_accumulator=0.1))
    item = TableConfig(name="item", dim=4, optimizer=AdamConfig())
    users, items = make_store(user), make_store(item)
    _trained(users, 1)
    _trained(items, 2)
    want_users, want_items = _all_rows(users), _all_rows(items)
    assert len(want_users) == 3000
    manifest = save_snapshot([users, items], tmp_path / "snap")
    assert {t["name"]: t["rows"] for t in manifest["tables"]} == {"user": 3000, "item": 3000}
    users.apply_gradients(_ids(5), np.ones((1, 8), np.float32), 1.0)  # changed after snapshot
    items.clear()
    restored = restore_snapshot({"user": users, "item": items}, tmp_path / "snap")
    assert restored == {"user": 3000, "item": 3000}
    assert _all_rows(users) == want_users and _all_rows(items) == want_items
    assert users.stats().rows == 3000
    # A restore announces its rows on the change feed, so followers rebuild.
    assert sum(c.ids.shape[0] for c in items.changes("0", count=100)) == 3000
    # Portable: an in-memory table restores what any store saved.
    mirror = InMemoryEmbeddingStore(user)
    restore_snapshot([mirror], tmp_path / "snap")
    assert _all_rows(mirror) == want_users


def test_snapshot_refuses_corrupt_or_mismatched_files(
    make_store: MakeStore, tmp_path: Path
) -> None:
    config = TableConfig(name="user", dim=8)
    store = make_store(config)
    _trained(store, 3)
    want = _all_rows(store)
    save_snapshot([store], tmp_path / "snap")

    wrong_dim = InMemoryEmbeddingStore(TableConfig(name="user", dim=16))
    with pytest.raises(SnapshotError, match="dim 8"):
        restore_snapshot([wrong_dim], tmp_path / "snap")
    wrong_opt = InMemoryEmbeddingStore(TableConfig(name="user", dim=8, optimizer=SgdConfig()))
    with pytest.raises(SnapshotError, match="optimizer 'adagrad'"):
        restore_snapshot([wrong_opt], tmp_path / "snap")
    with pytest.raises(SnapshotError, match="no table 'item'"):
        restore_snapshot(
            [InMemoryEmbeddingStore(TableConfig(name="item", dim=8))], tmp_path / "snap"
        )

    vectors = tmp_path / "snap" / "user" / "vectors.bin"
    data = bytearray(vectors.read_bytes())
    data[100] ^= 0x01
    vectors.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"checksum mismatch in user/vectors\.bin"):
        restore_snapshot([store], tmp_path / "snap")
    vectors.write_bytes(bytes(data[:-4]))
    with pytest.raises(SnapshotError, match="bytes, expected"):
        restore_snapshot([store], tmp_path / "snap")
    (tmp_path / "snap" / "manifest.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="manifest"):
        restore_snapshot([store], tmp_path / "snap")
    # A refused restore leaves the table as it was.
    assert _all_rows(store) == want
