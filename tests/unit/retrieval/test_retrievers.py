"""The same behaviour suite for every retriever: exact (numpy) and FAISS flat / IVF / HNSW."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from freshrec.errors import InvalidInput, SnapshotError
from freshrec.retrieval import (
    ExactRetriever,
    FaissRetriever,
    FlatConfig,
    HnswConfig,
    IvfConfig,
    RetrieverConfig,
    build_retriever,
)
from freshrec.retrieval.base import Retriever
from freshrec.retrieval.mirror import RowMirror
from freshrec.table.base import Rows
from tests.unit.retrieval.conftest import DIM, settle

Make = Callable[[], Retriever]


def _items(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    assert np.unique(ids).shape[0] == n
    # Half of the ids get the top bit set: the int64 bit pattern of those is negative.
    ids[::2] |= np.uint64(2**63)
    return ids, rng.standard_normal((n, DIM)).astype(np.float32)


def _queries(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_exact_and_faiss_flat_give_identical_results() -> None:
    ids, vectors = _items(3000, seed=1)
    exact, flat = ExactRetriever(DIM), FaissRetriever(DIM, FlatConfig())
    for retriever in (exact, flat):
        retriever.upsert(ids, vectors)
        retriever.remove(ids[:100])
    queries = _queries(64, seed=2)
    exclude = [ids[100 + i : 100 + i + (i % 7)] for i in range(64)]
    want_ids, want_scores = exact.search(queries, 25, exclude)
    got_ids, got_scores = flat.search(queries, 25, exclude)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
    assert want_ids.dtype == np.uint64 and want_scores.dtype == np.float32


def test_every_kind_matches_exact(make_retriever: Make) -> None:
    ids, vectors = _items(1500, seed=3)
    reference, retriever = ExactRetriever(DIM), make_retriever()
    for r in (reference, retriever):
        r.upsert(ids, vectors)
        r.remove(ids[::5])
    settle(retriever)
    queries = _queries(32, seed=4)
    want, _ = reference.search(queries, 10)
    got, scores = retriever.search(queries, 10)
    assert np.isfinite(scores).all()
    # HNSW is approximate even with a wide beam; the others must be exact here.
    needed = 0.97 if isinstance(retriever, FaissRetriever) and retriever.kind == "faiss-hnsw" else 1
    overlap = np.mean([len(np.intersect1d(g, w)) / 10 for g, w in zip(got, want, strict=True)])
    assert overlap >= needed
    assert not np.isin(got, ids[::5]).any()


def test_ids_at_and_above_2_63_round_trip(make_retriever: Make, tmp_path: Path) -> None:
    ids = np.array(
        [0, 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 0xDEADBEEFCAFEBABE, 2**62],
        dtype=np.uint64,
    )
    vectors = 10 * np.eye(DIM, dtype=np.float32)[: ids.shape[0]]
    retriever = make_retriever()
    retriever.upsert(ids, vectors)
    assert sorted(retriever.ids().tolist()) == sorted(ids.tolist())
    assert retriever.ids().dtype == np.uint64
    found, _ = retriever.search(np.eye(DIM, dtype=np.float32)[: ids.shape[0]], 1)
    np.testing.assert_array_equal(found[:, 0], ids)

    path = tmp_path / "index"
    retriever.save(path)
    loaded = type(retriever)(DIM) if isinstance(retriever, ExactRetriever) else None
    if loaded is None:
        assert isinstance(retriever, FaissRetriever)
        loaded = FaissRetriever(DIM, retriever.config)
    loaded.load(path)
    again, _ = loaded.search(np.eye(DIM, dtype=np.float32)[: ids.shape[0]], 1)
    np.testing.assert_array_equal(again[:, 0], ids)


def test_reserved_id_is_refused(make_retriever: Make) -> None:
    retriever = make_retriever()
    with pytest.raises(InvalidInput, match="reserved"):
        retriever.upsert(np.array([2**64 - 1], dtype=np.uint64), np.ones((1, DIM), np.float32))
    assert len(retriever) == 0


def test_exclusion_filters_and_still_returns_k(make_retriever: Make) -> None:
    ids, vectors = _items(400, seed=5)
    retriever = make_retriever()
    retriever.upsert(ids, vectors)
    settle(retriever)
    queries = _queries(2, seed=6)
    wide, _ = retriever.search(queries, 20)
    exclude = [wide[0, :6], np.zeros(0, dtype=np.uint64)]
    got, scores = retriever.search(queries, 10, exclude=exclude)
    assert got.shape == (2, 10) and np.isfinite(scores).all()
    assert not np.isin(got[0], wide[0, :6]).any()
    np.testing.assert_array_equal(got[0], wide[0, 6:16])
    np.testing.assert_array_equal(got[1], wide[1, :10])


def test_padding_when_fewer_items_than_k(make_retriever: Make) -> None:
    retriever = make_retriever()
    empty_ids, empty_scores = retriever.search(_queries(2, seed=7), 4)
    assert (empty_ids == 0).all() and np.isneginf(empty_scores).all()

    ids, vectors = _items(3, seed=8)
    retriever.upsert(ids, vectors)
    got, scores = retriever.search(_queries(1, seed=9), 5, exclude=[ids[:1]])
    assert sorted(got[0, :2].tolist()) == sorted(ids[1:].tolist())
    assert np.isfinite(scores[0, :2]).all()
    assert (got[0, 2:] == 0).all() and np.isneginf(scores[0, 2:]).all()
    assert (np.diff(scores[0, :2]) <= 0).all()


def test_upsert_replaces_the_vector(make_retriever: Make) -> None:
    ids, vectors = _items(300, seed=10)
    retriever = make_retriever()
    retriever.upsert(ids, vectors)
    target = ids[17]
    query = np.zeros((1, DIM), dtype=np.float32)
    query[0, 3] = 1.0
    retriever.upsert(np.array([target]), 100 * query)
    settle(retriever)
    assert len(retriever) == 300
    got, scores = retriever.search(query, 1)
    assert got[0, 0] == target and scores[0, 0] == pytest.approx(100.0)
    retriever.upsert(np.array([target]), -100 * query)
    got, _ = retriever.search(query, 300)
    assert got[0, -1] == target and (got[0] == target).sum() == 1


def test_repeated_id_in_one_upsert_keeps_the_last_vector(make_retriever: Make) -> None:
    retriever = make_retriever()
    vectors = np.zeros((3, DIM), dtype=np.float32)
    vectors[0, 0], vectors[1, 1], vectors[2, 0] = 1.0, 1.0, 2.0
    retriever.upsert(np.array([7, 8, 7], dtype=np.uint64), vectors)
    assert len(retriever) == 2
    got, scores = retriever.search(vectors[2:], 2)
    assert got[0, 0] == 7 and scores[0, 0] == pytest.approx(4.0)


def test_remove(make_retriever: Make) -> None:
    ids, vectors = _items(300, seed=11)
    retriever = make_retriever()
    retriever.upsert(ids, vectors)
    assert retriever.remove(np.concatenate([ids[:50], np.array([12345], dtype=np.uint64)])) == 50
    assert retriever.remove(ids[:50]) == 0
    settle(retriever)
    assert len(retriever) == 250
    assert set(retriever.ids().tolist()) == set(ids[50:].tolist())
    got, _ = retriever.search(vectors[:50], 5)
    assert not np.isin(got, ids[:50]).any()


def test_version_bumps_on_every_change(make_retriever: Make) -> None:
    retriever = make_retriever()
    ids, vectors = _items(10, seed=12)
    seen = [retriever.version]
    retriever.upsert(ids, vectors)
    seen.append(retriever.version)
    retriever.remove(ids[:1])
    seen.append(retriever.version)
    retriever.replace(ids[:3], vectors[:3])
    seen.append(retriever.version)
    retriever.upsert(ids[:0], vectors[:0])
    assert retriever.version == seen[-1]
    assert seen == sorted(set(seen))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.search(np.ones((2, DIM + 1), np.float32), 3), "queries"),
        (lambda r: r.search(np.ones((2, DIM), np.float32), 0), "k must"),
        (lambda r: r.search(np.ones((2, DIM), np.float32), 3, [np.zeros(0, np.uint64)]), "one"),
        (lambda r: r.upsert(np.array([1, 2], np.uint64), np.ones((3, DIM), np.float32)), "shape"),
        (
            lambda r: r.upsert(np.array([1], np.uint64), np.full((1, DIM), np.nan, np.float32)),
            "finite",
        ),
        (lambda r: r.upsert(np.array([-1]), np.ones((1, DIM), np.float32)), "non-negative"),
        (lambda r: r.remove(np.ones((2, 2), np.uint64)), "one-dimensional"),
        (lambda r: r.remove(np.array([1.5])), "dtype"),
    ],
)
def test_invalid_input_is_refused(
    make_retriever: Make, call: Callable[[Retriever], object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        call(make_retriever())


def test_save_and_load_keep_results(make_retriever: Make, tmp_path: Path) -> None:
    ids, vectors = _items(600, seed=13)
    retriever = make_retriever()
    retriever.upsert(ids, vectors)
    retriever.remove(ids[:150])  # leaves tombstones in HNSW
    retriever.upsert(ids[200:210], -vectors[200:210])
    settle(retriever)
    queries = _queries(16, seed=14)
    before = retriever.search(queries, 10)
    retriever.save(tmp_path / "index")
    clone = (
        FaissRetriever(DIM, retriever.config)
        if isinstance(retriever, FaissRetriever)
        else ExactRetriever(DIM)
    )
    clone.load(tmp_path / "index")
    assert len(clone) == 450
    after = clone.search(queries, 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5)


def test_load_refuses_another_dimension_or_garbage(make_retriever: Make, tmp_path: Path) -> None:
    retriever = make_retriever()
    other = (
        FaissRetriever(DIM + 1, retriever.config)
        if isinstance(retriever, FaissRetriever)
        else ExactRetriever(DIM + 1)
    )
    other.upsert(np.array([1], np.uint64), np.ones((1, DIM + 1), np.float32))
    other.save(tmp_path / "other")
    with pytest.raises(SnapshotError):
        retriever.load(tmp_path / "other")
    (tmp_path / "garbage").write_bytes(b"not an index at all")
    with pytest.raises(SnapshotError):
        retriever.load(tmp_path / "garbage")


def test_faiss_load_refuses_a_structure_the_config_cannot_serve(tmp_path: Path) -> None:
    hnsw = FaissRetriever(DIM, HnswConfig())
    hnsw.upsert(*_items(5, seed=15))
    hnsw.save(tmp_path / "hnsw")
    with pytest.raises(SnapshotError, match="configured for ivf"):
        FaissRetriever(DIM, IvfConfig()).load(tmp_path / "hnsw")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ({"type": "exact"}, "exact"),
        ({"type": "flat"}, "faiss-flat"),
        ({"type": "ivf", "nprobe": 8}, "faiss-ivf"),
        ({"type": "hnsw", "m": 16}, "faiss-hnsw"),
    ],
)
def test_build_retriever_from_config(raw: dict[str, object], kind: str) -> None:
    config = TypeAdapter(RetrieverConfig).validate_python(raw)
    retriever = build_retriever(config, DIM)
    assert retriever.kind == kind and retriever.dim == DIM


def test_tune_changes_search_parameters_live() -> None:
    ids, vectors = _items(2000, seed=16)
    retriever = FaissRetriever(DIM, IvfConfig(min_train_size=500, nprobe=1))
    retriever.replace(ids, vectors)
    exact = ExactRetriever(DIM)
    exact.replace(ids, vectors)
    queries = _queries(32, seed=17)
    truth, _ = exact.search(queries, 20)

    def recall() -> float:
        found, _ = retriever.search(queries, 20)
        return float(
            np.mean([len(np.intersect1d(f, t)) / 20 for f, t in zip(found, truth, strict=True)])
        )

    narrow = recall()
    retriever.tune(nprobe=10_000)
    assert retriever.config.nprobe == 10_000
    assert recall() == 1.0 > narrow
    with pytest.raises(InvalidInput):
        retriever.tune(ef_search=10)
    with pytest.raises(InvalidInput):
        FaissRetriever(DIM, FlatConfig()).tune(nprobe=4)


def _mirror_rows(ids: list[int], value: float, dim: int = 4) -> Rows:
    """Rows of `ids` whose every field says `value` (wall time: value + 1)."""
    n = len(ids)
    return Rows(
        ids=np.array(ids, dtype=np.uint64),
        vectors=np.full((n, dim), value, dtype=np.float32),
        state=np.zeros((n, 0), dtype=np.float32),
        event_time=np.full(n, value),
        wall_time=np.full(n, value + 1),
        count=np.full(n, int(value), dtype=np.int64),
    )


def test_row_mirror_put_remove_reuse_and_order() -> None:
    rows = _mirror_rows
    mirror = RowMirror(4, initial_capacity=2)
    mirror.put(rows([5, 2**64 - 1, 7], 1.0))  # grows past the initial capacity
    mirror.put(rows([7], 2.0))  # overwrite
    assert mirror.remove(np.array([5, 99], dtype=np.uint64)) == 1
    mirror.put(rows([11], 3.0))  # reuses the freed slot
    got = mirror.read_rows(np.array([11, 5, 7, 2**64 - 1], dtype=np.uint64))
    assert got.ids.tolist() == [11, 7, 2**64 - 1]
    assert got.vectors[:, 0].tolist() == [3.0, 2.0, 1.0]
    assert got.wall_time.tolist() == [4.0, 3.0, 2.0]
    assert got.count.tolist() == [3, 2, 1]
    assert len(mirror) == 3
    mirror.replace(rows([1], 9.0))
    assert len(mirror) == 1 and mirror.read_rows(np.array([7], dtype=np.uint64)).ids.size == 0


def test_row_mirror_binary_search_path_respects_removals_and_reuse() -> None:
    n = 3000
    ids = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(2**50)
    rows = Rows(
        ids=ids,
        vectors=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        state=np.zeros((n, 0), dtype=np.float32),
        event_time=np.zeros(n),
        wall_time=np.zeros(n),
        count=np.arange(n, dtype=np.int64),
    )
    mirror = RowMirror(2)
    mirror.replace(rows)  # held ids now answer through the sorted index
    assert mirror.remove(ids[:10]) == 10
    new = Rows(
        ids=np.array([7], dtype=np.uint64),
        vectors=np.full((1, 2), -1.0, dtype=np.float32),
        state=np.zeros((1, 0), dtype=np.float32),
        event_time=np.zeros(1),
        wall_time=np.zeros(1),
        count=np.array([99]),
    )
    mirror.put(new)  # takes a freed slot
    got = mirror.read_rows(np.concatenate([ids[:12], np.array([7, 8], dtype=np.uint64)]))
    assert got.ids.tolist() == [int(ids[10]), int(ids[11]), 7]
    assert got.count.tolist() == [10, 11, 99]
    assert len(mirror) == n - 10 + 1


def test_row_mirror_finds_an_id_removed_and_added_again_in_another_slot() -> None:
    def rows(ids: list[int], value: float) -> Rows:
        return _mirror_rows(ids, value, dim=2)

    mirror = RowMirror(2)
    mirror.replace(rows(list(range(1, 2001)), 1.0))  # 1..2000 answer through the index
    mirror.remove(np.array([5], dtype=np.uint64))
    mirror.put(rows([9001], 2.0))  # takes id 5's freed slot
    mirror.put(rows([5], 3.0))  # back, in a new slot: the index still names the old one
    got = mirror.read_rows(np.array([5, 9001, 6], dtype=np.uint64))
    assert got.ids.tolist() == [5, 9001, 6]
    assert got.vectors[:, 0].tolist() == [3.0, 2.0, 1.0]
