"""The ranker bench's request breakdown (from a real metrics exposition), its index timing,
recall and catalogs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from freshrec.metrics import LATENCY_BUCKETS_S, BatchHistogram
from freshrec.offline.bench.catalog import Catalog
from freshrec.offline.bench.ranker import ranker_catalog
from freshrec.offline.bench.ranker_costs import (
    STAGES,
    parse_counters,
    recall_at_k,
    search_costs,
    single_query_tail,
    stage_breakdown,
)
from freshrec.offline.bench.ranker_indexes import TARGET_RECALL, compare_indexes
from freshrec.retrieval import FaissRetriever, FlatConfig, IvfConfig


class _Exposition:
    """A registry with the series the ranker exports, under their real names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stages = BatchHistogram(
            "freshrec_ranker_stage_duration_seconds",
            "stages",
            LATENCY_BUCKETS_S,
            registry=self.registry,
            labelnames=["stage"],
        )
        self.batches = Histogram(
            "freshrec_ranker_batch_requests", "batch", registry=self.registry, buckets=(1, 2, 4)
        )
        self.http = Histogram(
            "freshrec_http_request_duration_seconds",
            "http",
            ["service", "route", "method"],
            registry=self.registry,
        )
        self.cpu = Counter("process_cpu_seconds", "cpu", registry=self.registry)
        self.changes = Counter(
            "freshrec_index_changes", "changes", ["index", "op"], registry=self.registry
        )
        self.reloads = Counter("freshrec_ranker_model_reloads", "reloads", registry=self.registry)

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def batch(self, requests: int, stage_s: float, route_s: float) -> None:
        """One batch of `requests`: every stage took `stage_s`, each request `route_s`."""
        self.batches.observe(requests)
        for stage in STAGES:
            self.stages.labels(stage).observe(stage_s, requests)
        for _ in range(requests):
            self.http.labels("ranker", "/v1/recommend", "POST").observe(route_s)
            self.http.labels("ranker", "/metrics", "GET").observe(1.0)  # another route


def test_breakdown_is_the_delta_of_one_phase() -> None:
    metrics = _Exposition()
    metrics.batch(5, 1.0, 9.0)  # before the phase: must not count
    before = parse_counters(metrics.text())
    metrics.batch(2, 0.001, 0.006)
    metrics.batch(1, 0.001, 0.006)
    metrics.cpu.inc(1.5)
    metrics.changes.labels("split", "upsert").inc(40)
    metrics.changes.labels("split", "remove").inc(2)
    metrics.reloads.inc()
    after = parse_counters(metrics.text())
    got = stage_breakdown(before, after, client_mean_s=0.010, wall_s=3.0)
    assert got["requests"] == 3
    assert got["mean_batch"] == 1.5
    assert all(got[f"{s}_ms"] == pytest.approx(1.0) for s in STAGES)
    assert got["in_route_ms"] == pytest.approx(6.0)
    assert got["batcher_and_handler_ms"] == pytest.approx(6.0 - 4 * 1.0)
    assert got["outside_route_ms"] == pytest.approx(4.0)
    assert got["ranker_cpu_cores"] == pytest.approx(0.5)
    assert got["in_route_p99_at_most_ms"] == 10.0  # the 6 ms requests' bucket
    assert (got["index_changes"], got["model_reloads"]) == (42, 1)


def test_breakdown_bounds_the_route_tail_by_its_bucket() -> None:
    metrics = _Exposition()
    before = parse_counters(metrics.text())
    metrics.batch(98, 0.001, 0.006)
    metrics.batch(2, 0.1, 0.3)  # 2 % of the phase: the 99th percentile is among them
    got = stage_breakdown(before, parse_counters(metrics.text()), 0.01, 1.0)
    assert got["in_route_p99_at_most_ms"] == 500.0


def test_no_request_in_a_phase_says_so() -> None:
    text = _Exposition().text()
    assert stage_breakdown(parse_counters(text), parse_counters(text), 0.01, 1.0) == {"requests": 0}


def test_search_costs_and_recall_of_an_exact_and_a_coarse_index() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3_000, 8)).astype(np.float32)
    queries = rng.standard_normal((12, 8)).astype(np.float32)
    ids = np.arange(vectors.shape[0], dtype=np.uint64)
    exact = FaissRetriever(8, FlatConfig())
    exact.replace(ids, vectors)
    coarse = FaissRetriever(8, IvfConfig(min_train_size=1_000, nlist=64, nprobe=1))
    coarse.replace(ids, vectors)
    assert recall_at_k(exact, vectors, queries, 50) == 1.0
    assert 0.0 < recall_at_k(coarse, vectors, queries, 50) < 0.9  # one list of 64
    costs = search_costs(coarse, vectors, queries, 50, batches=(1, 3, 5), passes=1)
    assert set(costs) == {"1", "3", "5"}
    for batch, cost in costs.items():
        calls = -(-queries.shape[0] // int(batch))
        assert cost["ms_per_query"] * queries.shape[0] == pytest.approx(
            cost["ms_per_call"] * calls, rel=0.01, abs=1e-3
        )
    assert set(search_costs(None, vectors, queries, 50, batches=(2,), passes=1)) == {"2"}
    tail = single_query_tail(coarse, queries, 50, calls=40)
    assert 0.0 < tail["p50_ms"] <= tail["p99_ms"] <= tail["max_ms"]


def test_random_catalog_is_seeded_and_refuses_unknown_kinds() -> None:
    one, two = ranker_catalog("random", 30_000, 8, queries=7), ranker_catalog("random", 30_000, 8)
    assert one.items.shape == (30_000, 8) and one.queries.shape == (7, 8)
    assert len(np.unique(one.ids)) == 30_000
    np.testing.assert_array_equal(one.items, two.items)
    np.testing.assert_array_equal(one.ids, two.ids)
    with pytest.raises(ValueError, match="unknown ranker catalog"):
        ranker_catalog("gaussian", 10, 8)


def test_index_comparison_chooses_the_cheapest_setting_reaching_the_target(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    n = 20_000  # the IVF retriever's min_train_size: trained, not its flat phase
    catalog = Catalog(
        "random",
        np.arange(n, dtype=np.uint64),
        rng.standard_normal((n, 8)).astype(np.float32),
        rng.standard_normal((6, 8)).astype(np.float32),
    )
    result = compare_indexes(catalog, tmp_path, {"ivf": (1, 4096), "hnsw": (500,)})
    assert json.loads((tmp_path / "ranker_indexes.json").read_text()) == result
    ivf = result["kinds"]["ivf"]
    first, every_list = ivf["sweep"]
    assert first["recall_at_100"] < TARGET_RECALL  # one list of about 500
    assert every_list["recall_at_100"] == 1.0  # nprobe above nlist scans every list
    assert ivf["chosen"] == every_list
    assert set(every_list["cost"]) == {"1", "2", "3", "32"}
    hnsw = result["kinds"]["hnsw"]
    assert hnsw["param_name"] == "ef_search" and len(hnsw["sweep"]) == 1
    reached = hnsw["sweep"][0]["recall_at_100"] >= TARGET_RECALL
    assert (hnsw["chosen"] is not None) == reached
    with pytest.raises(ValueError, match="unknown index kind"):
        compare_indexes(catalog, tmp_path, {"pq": (1,)})
