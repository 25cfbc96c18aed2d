"""`BatchHistogram` exposes the samples `prometheus_client.Histogram` would."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from freshrec.metrics import BatchHistogram

BUCKETS = (0.01, 0.1, 1.0, 10.0)


def test_same_samples_as_one_observe_per_value() -> None:
    reference_registry, batch_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram(
        "freshrec_x_seconds", "Doc.", buckets=BUCKETS, registry=reference_registry
    )
    batch = BatchHistogram("freshrec_x_seconds", "Doc.", BUCKETS, registry=batch_registry)
    rng = np.random.default_rng(3)
    # bucket bounds themselves count as "<=", as in Prometheus
    values = np.concatenate([rng.exponential(0.5, 500), np.array(BUCKETS), [0.0, 50.0]])
    for value in values:
        reference.observe(float(value))
    batch.observe_many(values[:100])
    batch.observe_many(values[100:])
    batch.observe_many([])
    for le in ("0.01", "0.1", "1.0", "10.0", "+Inf"):
        labels = {"le": le}
        expected = reference_registry.get_sample_value("freshrec_x_seconds_bucket", labels)
        assert batch_registry.get_sample_value("freshrec_x_seconds_bucket", labels) == expected
    name = "freshrec_x_seconds_count"
    assert batch_registry.get_sample_value(name) == reference_registry.get_sample_value(name)
    name = "freshrec_x_seconds_sum"
    assert batch_registry.get_sample_value(name) == pytest.approx(
        reference_registry.get_sample_value(name), rel=1e-12
    )
    text = generate_latest(batch_registry).decode()
    assert "# TYPE freshrec_x_seconds histogram" in text


def test_single_observations_and_an_explicit_inf_bucket() -> None:
    registry = CollectorRegistry()
    batch = BatchHistogram(
        "freshrec_y_seconds", "Doc.", (*BUCKETS, float("inf")), registry=registry
    )
    batch.observe(0.05)
    batch.observe(20.0)
    assert registry.get_sample_value("freshrec_y_seconds_bucket", {"le": "0.1"}) == 1.0
    assert registry.get_sample_value("freshrec_y_seconds_bucket", {"le": "+Inf"}) == 2.0
    assert registry.get_sample_value("freshrec_y_seconds_count") == 2.0
    assert registry.get_sample_value("freshrec_y_seconds_sum") == 20.05


def test_labelled_series_and_repeated_observations() -> None:
    reference_registry, batch_registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram(
        "freshrec_z_seconds", "Doc.", ["stage"], buckets=BUCKETS, registry=reference_registry
    )
    batch = BatchHistogram(
        "freshrec_z_seconds", "Doc.", BUCKETS, registry=batch_registry, labelnames=["stage"]
    )
    for stage, value, times in [("a", 0.05, 3), ("b", 2.0, 1), ("a", 0.5, 2), ("b", 0.1, 0)]:
        for _ in range(times):
            reference.labels(stage).observe(value)
        batch.labels(stage).observe(value, times)
    batch.labels("b").observe_many([0.001, 20.0])
    reference.labels("b").observe(0.001)
    reference.labels("b").observe(20.0)
    for stage in ("a", "b"):
        for le in ("0.01", "0.1", "1.0", "10.0", "+Inf"):
            labels = {"stage": stage, "le": le}
            name = "freshrec_z_seconds_bucket"
            expected = reference_registry.get_sample_value(name, labels)
            assert batch_registry.get_sample_value(name, labels) == expected
        for name in ("freshrec_z_seconds_count", "freshrec_z_seconds_sum"):
            expected = reference_registry.get_sample_value(name, {"stage": stage})
            got = batch_registry.get_sample_value(name, {"stage": stage})
            assert got == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="labels"):
        batch.observe(1.0)  # a labelled histogram records through labels(...)
