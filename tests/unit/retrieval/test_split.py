"""The `split` index: the largest-norm items exact, the rest IVF; routing by norm, rebuilds
when the head's size moves, snapshots, tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freshrec.errors import InvalidInput, SnapshotError
from freshrec.retrieval import ExactRetriever, FaissRetriever, FlatConfig, IvfConfig
from freshrec.retrieval.config import SplitConfig
from freshrec.retrieval.faiss.split import SplitIndex, norm_threshold
from freshrec.retrieval.faiss.structure import to_labels

DIM = 8


def _catalog(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` ids and vectors whose norms spread over a decade (as trained rows' do)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors *= rng.uniform(0.1, 1.0, size=(n, 1)).astype(np.float32)
    return np.arange(1, n + 1, dtype=np.uint64), vectors


def _trained(config: SplitConfig, n: int = 2_000) -> tuple[FaissRetriever, np.ndarray]:
    ids, vectors = _catalog(n, seed=1)
    retriever = FaissRetriever(DIM, config)
    retriever.replace(ids, vectors)
    assert retriever.structure == "split"
    return retriever, vectors


def _parts(retriever: FaissRetriever) -> SplitIndex:
    structure = retriever._structure  # the parts are what is under test
    assert isinstance(structure, SplitIndex)
    return structure


def test_the_head_holds_the_largest_norms_and_an_upsert_moves_across() -> None:
    retriever, vectors = _trained(SplitConfig(min_train_size=500, head_fraction=0.1))
    split = _parts(retriever)
    norms = np.linalg.norm(vectors, axis=1)
    assert split.threshold == pytest.approx(norm_threshold(vectors, 0.1))
    head = set((split.head.labels().astype(np.uint64)).tolist())
    assert head == set((np.flatnonzero(norms >= split.threshold) + 1).tolist())
    assert abs(len(head) - 200) <= 1 and split.size() == 2_000
    small = int(np.argmin(norms)) + 1  # a tail item grown past the threshold moves to the head
    big = vectors[small - 1] / norms[small - 1] * (split.threshold * 2)
    retriever.upsert(np.array([small], dtype=np.uint64), big[None, :])
    assert small in set(split.head.labels().tolist())
    assert small not in set(split.tail.labels().tolist())
    assert len(retriever) == 2_000
    assert retriever.remove(np.array([small, 10**9], dtype=np.uint64)) == 1
    assert small not in set(split.labels().tolist()) and len(retriever) == 1_999


def test_a_small_nprobe_finds_the_large_rows_that_ivf_alone_misses() -> None:
    ids, vectors = _catalog(4_000, seed=2)
    queries = np.random.default_rng(3).standard_normal((30, DIM)).astype(np.float32)
    exact, split = ExactRetriever(DIM), FaissRetriever(DIM, SplitConfig(min_train_size=500))
    ivf = FaissRetriever(DIM, IvfConfig(min_train_size=500, nprobe=1))
    for retriever in (exact, split, ivf):
        retriever.replace(ids, vectors)
    split.tune(nprobe=1)
    truth = exact.search(queries, 20).ids

    def recall(found: np.ndarray) -> float:
        return float(
            np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(found, truth, strict=True)])
        )

    # the merged answer is sorted best first and holds the head's exact top items
    got = split.search(queries, 20)
    assert np.all(np.diff(got.scores, axis=1) <= 0)
    assert recall(got.ids) > recall(ivf.search(queries, 20).ids)


def test_a_head_grown_past_its_bound_rebuilds_with_a_new_threshold() -> None:
    config = SplitConfig(min_train_size=500, head_fraction=0.05, max_head_growth=1.5)
    retriever, _ = _trained(config)
    before = _parts(retriever)
    assert before.built_head == before.head.size()
    ids, vectors = _catalog(2_000, seed=1)
    grown = vectors[:200] * 50  # norms far above the threshold: the head triples
    retriever.upsert(ids[:200], grown)
    assert retriever.wait_for_rebuild(60)
    after = _parts(retriever)
    assert retriever.rebuilds == 1 and after is not before
    assert after.threshold > before.threshold
    assert after.head.size() == pytest.approx(0.05 * 2_000, abs=1)
    assert len(retriever) == 2_000


def test_snapshot_round_trip_and_what_a_split_retriever_refuses(tmp_path: Path) -> None:
    retriever, vectors = _trained(SplitConfig(min_train_size=500, nprobe=3))
    path = tmp_path / "index"
    retriever.save(path)
    loaded = FaissRetriever(DIM, SplitConfig(min_train_size=500, nprobe=3))
    loaded.load(path)
    queries = vectors[:10] + 0.01
    np.testing.assert_array_equal(loaded.search(queries, 15).ids, retriever.search(queries, 15).ids)
    assert (loaded.structure, len(loaded)) == ("split", 2_000)
    with pytest.raises(SnapshotError, match="cannot read FAISS index"):  # not IVF's format
        FaissRetriever(DIM, IvfConfig()).load(path)
    flat = FaissRetriever(DIM, FlatConfig())
    flat.upsert(np.array([5], dtype=np.uint64), vectors[:1])
    flat.save(tmp_path / "flat")
    loaded.load(tmp_path / "flat")  # a flat snapshot: the split retriever's first phase
    assert (loaded.structure, len(loaded)) == ("flat", 1)
    (tmp_path / "broken").write_bytes(b"PK\x03\x04 not an archive")
    with pytest.raises(SnapshotError, match="cannot read a split index"):
        loaded.load(tmp_path / "broken")
    with pytest.raises(InvalidInput, match="ef_search"):
        retriever.tune(ef_search=10)
    retriever.tune(nprobe=7)
    assert _parts(retriever).nprobe == 7


def test_labels_and_contents_cover_both_parts() -> None:
    retriever, vectors = _trained(SplitConfig(min_train_size=500))
    labels, held = _parts(retriever).contents()
    order = np.argsort(labels)
    expected = to_labels(np.arange(1, 2_001, dtype=np.uint64))
    np.testing.assert_array_equal(labels[order], expected)
    np.testing.assert_array_equal(held[order], vectors)
