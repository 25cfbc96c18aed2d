"""IVF drift checks: a catalog that moves is retrained in the background and swapped in
atomically while searches go on; a catalog that only churns in place is left alone; the
recall floor and the churn volume each retrain on their own, and a floor out of reach
retrains once, not in a loop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from freshrec.retrieval import ExactRetriever, FaissRetriever, IvfConfig
from freshrec.retrieval.faiss.drift import projected_recall
from freshrec.retrieval.metrics import INDEX_REBUILDS

DIM = 16
N = 6_000
K = 50


def _config(**overrides: float) -> IvfConfig:
    knobs: dict[str, float] = {
        "min_train_size": 2_000,
        "nlist": 64,
        "nprobe": 6,
        "drift_check_fraction": 0.05,
        "probe_queries": 32,
        "probe_k": K,
        "retrain_churn_fraction": 0.0,  # each trigger is tested on its own
    }
    knobs.update(overrides)
    return IvfConfig.model_validate(knobs)


def _clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    picks = centres[rng.integers(0, centres.shape[0], size=n)]
    return (picks + 0.3 * rng.standard_normal((n, DIM))).astype(np.float32)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [np.intersect1d(f, t).shape[0] for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


class _Searcher(threading.Thread):
    """Searches without pause until stopped; records failures and short answers."""

    def __init__(self, retriever: FaissRetriever, queries: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.retriever, self.queries = retriever, queries
        self.stop = threading.Event()
        self.searches = 0
        self.failures: list[BaseException] = []
        self.short = 0

    def run(self) -> None:
        while not self.stop.is_set():
            row = self.searches % self.queries.shape[0]
            try:
                result = self.retriever.search(self.queries[row : row + 1], K)
            except BaseException as exc:
                self.failures.append(exc)
                return
            self.short += int(not np.isfinite(result.scores).all())
            self.searches += 1


def test_moving_catalog_retrains_in_background_and_swaps_while_searching() -> None:
    rng = np.random.default_rng(3)
    old_centres = 2.0 * rng.standard_normal((20, DIM))
    new_centres = 2.0 * rng.standard_normal((20, DIM)) + 6.0 * rng.standard_normal(DIM)
    ids = np.arange(1, N + 1, dtype=np.uint64) + np.uint64(2**63)
    vectors = _clustered(rng, N, old_centres)
    retriever = FaissRetriever(DIM, _config(), name="drift-test")
    exact = ExactRetriever(DIM)
    for index in (retriever, exact):
        index.replace(ids, vectors)
    assert retriever.structure == "ivf" and retriever.rebuilds == 0
    queries = _clustered(rng, 64, new_centres)
    searcher = _Searcher(retriever, queries)
    searcher.start()
    # a third of the catalog moves to a region the centroids were not trained on
    moved = rng.choice(ids, size=N // 3, replace=False)
    fresh = _clustered(rng, moved.shape[0], new_centres)
    for index in (retriever, exact):  # one feed poll's worth: a check is due at once
        index.upsert(moved, fresh)
    assert retriever.wait_for_drift_check(30.0)
    assert retriever.wait_for_rebuild(60.0)
    searcher.stop.set()
    searcher.join(10.0)

    assert searcher.failures == [] and searcher.searches > 0
    assert searcher.short == 0  # the catalog always had K items: every answer was full
    assert retriever.rebuilds >= 1
    reasons = {check.reason for check in retriever.drift_checks} - {None}
    assert reasons and reasons <= {"imbalance", "recall"}
    for reason in reasons:
        assert INDEX_REBUILDS.labels(index="drift-test", reason=reason)._value.get() >= 1
    # the swapped-in index holds exactly the contents
    assert len(retriever) == N
    assert set(retriever.ids().tolist()) == set(ids.tolist())
    truth = exact.search(queries, K).ids
    # scanning every list, the swapped-in index answers exactly: it holds every vector
    retriever.tune(nprobe=64)
    assert _recall(retriever.search(queries, K).ids, truth) == 1.0
    retriever.close()


def _move_a_third(
    retriever: FaissRetriever, config: IvfConfig, seed: int, *, settle: bool = False
) -> None:
    """Train on one region, search (so the probe has queries), move a third elsewhere;
    `settle`: after each move, let a retrain it set off finish and its post-swap check run
    before the next move (so that probe measures the index on what it was trained on)."""
    rng = np.random.default_rng(seed)
    old_centres = 2.0 * rng.standard_normal((20, DIM))
    new_centres = 2.0 * rng.standard_normal((20, DIM)) + 6.0 * rng.standard_normal(DIM)
    ids = np.arange(N, dtype=np.uint64)
    vectors = _clustered(rng, N, old_centres)
    retriever.replace(ids, vectors)
    queries = _clustered(rng, 32, new_centres)
    for row in range(queries.shape[0]):  # the probe keeps one query per call
        retriever.search(queries[row : row + 1], K)
    # a first check, with nothing moved yet, gives the probe its baseline
    steady = ids[: int(N * config.drift_check_fraction)]
    retriever.upsert(steady, vectors[: steady.shape[0]])
    assert retriever.wait_for_drift_check(30.0)
    moved = rng.choice(ids[steady.shape[0] :], size=N // 3, replace=False)
    for batch in np.array_split(moved, 20):
        retriever.upsert(batch, _clustered(rng, batch.shape[0], new_centres))
        retriever.wait_for_drift_check(30.0)
        if settle:
            retriever.wait_for_rebuild(60.0)
            retriever.wait_for_drift_check(30.0)
    assert retriever.wait_for_rebuild(60.0)


def test_recall_probe_alone_triggers_a_retrain() -> None:
    config = _config(max_imbalance_growth=1e6)
    retriever = FaissRetriever(DIM, config, name="probe-test")
    _move_a_third(retriever, config, seed=4)
    checks = retriever.drift_checks
    assert checks[0].reason is None and checks[0].baseline_recall == checks[0].recall
    probes = [check for check in checks if check.reason == "recall"]
    assert probes
    for check in probes:
        assert check.recall is not None and check.baseline_recall is not None
        assert check.recall < check.baseline_recall - config.max_recall_drop
    assert retriever.rebuilds >= 1
    assert INDEX_REBUILDS.labels(index="probe-test", reason="recall")._value.get() >= 1
    retriever.close()


def test_list_imbalance_alone_triggers_a_retrain() -> None:
    config = _config(probe_queries=0)
    retriever = FaissRetriever(DIM, config, name="imbalance-test")
    _move_a_third(retriever, config, seed=7)
    crowded = [check for check in retriever.drift_checks if check.reason == "imbalance"]
    assert crowded and all(c.imbalance_growth > 1.5 and c.recall is None for c in crowded)
    assert retriever.rebuilds >= 1
    assert INDEX_REBUILDS.labels(index="imbalance-test", reason="imbalance")._value.get() >= 1
    retriever.close()


def _trained_in_place(
    seed: int, config: IvfConfig, name: str
) -> tuple[FaissRetriever, np.random.Generator, np.ndarray, np.ndarray]:
    """A retriever trained on a clustered catalog; its rng, centres and ids."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((20, DIM))
    ids = np.arange(N, dtype=np.uint64)
    retriever = FaissRetriever(DIM, config, name=name)
    retriever.replace(ids, _clustered(rng, N, centres))
    return retriever, rng, centres, ids


def test_churn_in_place_keeps_the_trained_index() -> None:
    # a floor under what the probe reads and a churn volume above what is churned (half)
    config = _config(min_probe_recall=0.98, retrain_churn_fraction=0.6)
    retriever, rng, centres, ids = _trained_in_place(5, config, "steady-test")
    queries = _clustered(rng, 32, centres)
    for row in range(queries.shape[0]):
        retriever.search(queries[row : row + 1], K)
    for _ in range(10):  # items re-trained where they were: the centroids still fit
        batch = rng.choice(ids, size=N // 20, replace=False)
        retriever.upsert(batch, _clustered(rng, batch.shape[0], centres))
        assert retriever.wait_for_drift_check(30.0)
    assert retriever.wait_for_rebuild(60.0)
    checks = retriever.drift_checks
    assert len(checks) >= 5
    assert all(c.reason is None and c.recall is not None for c in checks)
    assert all(c.recall is not None and c.recall >= config.min_probe_recall for c in checks)
    assert checks[-1].churn >= 0.45
    assert retriever.rebuilds == 0 and retriever.rebuild_events == []
    retriever.close()


def test_probe_under_the_floor_retrains_where_the_relative_drop_does_not() -> None:
    # the relative drop alone never fires here: only the floor can retrain
    knobs = {"max_imbalance_growth": 1e6, "max_recall_drop": 0.99}
    no_floor = _config(**knobs)
    unfloored = FaissRetriever(DIM, no_floor, name="unfloored-test")
    _move_a_third(unfloored, no_floor, seed=4)
    assert unfloored.rebuilds == 0
    assert min(c.recall or 1.0 for c in unfloored.drift_checks) < 0.9
    unfloored.close()

    config = _config(**knobs, min_probe_recall=0.9)
    retriever = FaissRetriever(DIM, config, name="floor-test")
    _move_a_third(retriever, config, seed=4, settle=True)
    assert retriever.wait_for_drift_check(30.0)
    checks = retriever.drift_checks
    assert checks[0].reason is None and checks[0].recall is not None
    assert checks[0].recall >= config.min_probe_recall
    fired = [n for n, check in enumerate(checks) if check.reason == "recall_floor"]
    assert fired
    for n in fired:
        recall = checks[n].recall
        assert recall is not None and recall < config.min_probe_recall
    assert retriever.rebuilds >= 1
    assert {event.reason for event in retriever.rebuild_events} == {"recall_floor"}
    assert INDEX_REBUILDS.labels(index="floor-test", reason="recall_floor")._value.get() >= 1
    # the check run right after the swap measures the retrained index: back over the floor
    after = checks[fired[-1] + 1]
    assert after.reason is None and after.recall is not None
    assert after.recall >= config.min_probe_recall and after.baseline_recall == after.recall
    assert not after.floor_suspended
    retriever.close()


def test_floor_out_of_reach_retrains_once_then_is_suspended() -> None:
    rng = np.random.default_rng(6)
    ids = np.arange(N, dtype=np.uint64)
    # structureless vectors with 2 of 64 lists probed: no training reaches 0.9
    config = _config(nprobe=2, min_probe_recall=0.9)
    retriever = FaissRetriever(DIM, config, name="suspend-test")
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    retriever.replace(ids, vectors)
    queries = rng.standard_normal((32, DIM)).astype(np.float32)
    for row in range(queries.shape[0]):
        retriever.search(queries[row : row + 1], K)
    step = int(N * config.drift_check_fraction)
    for start in range(0, 6 * step, step):  # six checks' worth, in place
        retriever.upsert(ids[start : start + step], vectors[start : start + step])
        assert retriever.wait_for_drift_check(30.0)
        assert retriever.wait_for_rebuild(60.0)
        assert retriever.wait_for_drift_check(30.0)
    reasons = [check.reason for check in retriever.drift_checks]
    assert reasons.count("recall_floor") == 1 and reasons[0] == "recall_floor"
    assert retriever.rebuilds == 1
    after = retriever.drift_checks[1]  # the check right after the swap
    assert after.recall is not None and after.recall < config.min_probe_recall
    assert after.floor_suspended and retriever.drift_checks[-1].floor_suspended
    retriever.close()


def test_churn_volume_retrains_without_any_check() -> None:
    config = _config(drift_check_fraction=0.0, retrain_churn_fraction=0.2)
    retriever, rng, centres, ids = _trained_in_place(8, config, "churn-test")

    def rewrite(n: int) -> None:  # items re-trained in place, in feed-poll-sized batches
        for batch in np.array_split(rng.choice(ids, size=n, replace=False), 10):
            retriever.upsert(batch, _clustered(rng, batch.shape[0], centres))

    rewrite(N // 6)  # 17 %: under the volume
    assert retriever.wait_for_rebuild(60.0) and retriever.rebuilds == 0
    retriever.remove(ids[: N // 20])  # removals count too: 22 %
    assert retriever.wait_for_rebuild(60.0)
    assert [event.reason for event in retriever.rebuild_events] == ["churn"]
    assert retriever.rebuild_events[0].items == N - N // 20
    assert INDEX_REBUILDS.labels(index="churn-test", reason="churn")._value.get() == 1
    rewrite(N // 6)  # the count restarted at the swap
    assert retriever.wait_for_rebuild(60.0) and retriever.rebuilds == 1
    assert retriever.drift_checks == []
    retriever.close()


def test_checks_off() -> None:
    rng = np.random.default_rng(6)
    ids = np.arange(N, dtype=np.uint64)
    retriever = FaissRetriever(DIM, _config(drift_check_fraction=0.0), name="off-test")
    retriever.replace(ids, rng.standard_normal((N, DIM)).astype(np.float32))
    retriever.upsert(ids[: N // 2], 10.0 + rng.standard_normal((N // 2, DIM)).astype(np.float32))
    assert retriever.wait_for_drift_check(5.0)
    assert retriever.drift_checks == []
    retriever.close()


def test_projected_recall_follows_the_fall_one_training_time_ahead() -> None:
    # fell 0.02 in 40 s: 20 s of training ahead it will have fallen 0.01 more
    assert projected_recall(0.975, 0.995, elapsed_s=40.0, lead_s=20.0) == pytest.approx(0.965)
    # a window shorter than the lead is not extrapolated (its noise would be magnified)
    assert projected_recall(0.975, 0.995, elapsed_s=10.0, lead_s=20.0) == 0.975
    # steady or rising recall, or no measured training time: no projection
    assert projected_recall(0.995, 0.995, elapsed_s=40.0, lead_s=20.0) == 0.995
    assert projected_recall(0.999, 0.995, elapsed_s=40.0, lead_s=20.0) == 0.999
    assert projected_recall(0.975, 0.995, elapsed_s=40.0, lead_s=0.0) == 0.975
