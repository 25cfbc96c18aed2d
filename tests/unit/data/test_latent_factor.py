"""The latent-factor world and the trained catalog built from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freshrec.offline.bench.catalog import make_catalog, trained_catalog
from freshrec.offline.data.synthetic import LatentFactorConfig, LatentFactorWorld
from freshrec.stream.events import Event
from freshrec.table import InMemoryTableBackend, load_tables, open_tables

TABLES = Path(__file__).resolve().parents[3] / "libs" / "freshrec" / "tables.yaml"
SMALL = LatentFactorConfig(n_items=600, n_users=50, topics=4, events_per_item=3)


def test_every_item_is_rated_and_the_stream_repeats() -> None:
    world = LatentFactorWorld(SMALL, seed=1)
    events = [e for block in world.rating_blocks(256) for e in block]
    assert len(events) == SMALL.n_items * SMALL.events_per_item
    items = {e["item_id"] for e in events}
    assert items == {f"i{k}" for k in range(SMALL.n_items)}
    assert {e["value"] for e in events} <= {1.0, 2.0, 3.0, 4.0, 5.0}
    times = [e["timestamp"] for e in events]
    assert times == sorted(times)
    Event.model_validate(events[0], context={"now": times[-1]})  # the wire format
    again = [e for block in LatentFactorWorld(SMALL, seed=1).rating_blocks(256) for e in block]
    assert again == events
    other = [e for block in LatentFactorWorld(SMALL, seed=2).rating_blocks(256) for e in block]
    assert other != events


def test_ratings_follow_the_hidden_affinity_and_tastes_drift() -> None:
    world = LatentFactorWorld(SMALL, seed=3)
    events = [e for block in world.rating_blocks(512) for e in block]
    users = np.array([int(e["user_id"][1:]) for e in events])
    items = np.array([int(e["item_id"][1:]) for e in events])
    # the rater is the best of `candidates` random users: affinity above a random user's
    chosen = np.einsum(
        "bf,bf->b", world.users_at(users, SMALL.start_time), world.item_factors[items]
    )
    rng = np.random.default_rng(0)
    random_users = rng.integers(0, SMALL.n_users, size=users.shape[0])
    random = np.einsum(
        "bf,bf->b", world.users_at(random_users, SMALL.start_time), world.item_factors[items]
    )
    assert chosen.mean() > random.mean() + 0.1
    now = world.users_at(np.arange(5), SMALL.start_time)
    later = world.users_at(np.arange(5), SMALL.start_time + SMALL.drift_period_s)
    np.testing.assert_allclose(now, world.user_factors[0][:5], rtol=1e-6)
    np.testing.assert_allclose(later, world.user_factors[1][:5], rtol=1e-5, atol=1e-6)


def test_trained_catalog_is_built_once_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHREC_BENCH_CACHE", str(tmp_path))
    built = trained_catalog(SMALL, seed=4)
    assert built.built["cache"]["hit"] is False
    assert built.ids.shape == (SMALL.n_items,) and built.items.shape == (SMALL.n_items, 32)
    assert np.all(built.queries[:, -1] == 1.0)  # retrieval queries meet the item bias
    assert built.built["events"] == SMALL.n_items * SMALL.events_per_item
    cached = trained_catalog(SMALL, seed=4)
    assert cached.built["cache"]["hit"] is True
    np.testing.assert_array_equal(cached.ids, built.ids)
    np.testing.assert_array_equal(cached.items, built.items)
    # the trainer moved every row away from the table's initial vector of its id
    fresh = open_tables(load_tables(TABLES), InMemoryTableBackend())
    initial = fresh.item.pull(built.ids).vectors
    moved = np.linalg.norm(built.items - initial, axis=1)
    assert np.all(moved > 1e-4)
    assert len(list(tmp_path.iterdir())) == 1


def test_synthetic_catalogs_have_the_asked_shapes() -> None:
    for kind in ("gaussian", "clustered"):
        catalog = make_catalog(kind, 1_000, 20, 8, seed=0)
        assert catalog.items.shape == (1_000, 8) and catalog.queries.shape == (20, 8)
        assert np.unique(catalog.ids).shape == (1_000,)
    with pytest.raises(ValueError, match="unknown catalog"):
        make_catalog("nope", 10, 1, 8, seed=0)
