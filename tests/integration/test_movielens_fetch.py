"""The real MovieLens-100K: downloaded once from PyPI (the recbole wheel, ~2 MB) and cached."""

from __future__ import annotations

from itertools import islice

import numpy as np
from typer.testing import CliRunner

from freshrec.offline.data.movielens import (
    RECBOLE_WHEEL_SHA256,
    default_data_dir,
    fetch_movielens_wheel,
    load_movielens,
    movielens_events,
)
from services.cli.data import data_app


def test_movielens_100k_from_the_pinned_wheel() -> None:
    # the default cache (FRESHREC_DATA_DIR or ~/.cache/freshrec/data): fetched once per machine
    wheel = fetch_movielens_wheel()
    assert wheel.parent == default_data_dir()
    ml = load_movielens()
    assert len(ml) == 100_000
    assert ml.n_users == 943 and ml.n_items == 1682
    assert len(ml.titles) == 1682 and ml.titles["1"] == "Toy Story"
    assert len(ml.user_features) == 943
    assert bool(np.all(np.diff(ml.timestamps) >= 0))
    assert set(np.unique(ml.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert sorted(ml.rows.tolist()) == list(range(100_000))
    first = next(iter(movielens_events(ml)))
    assert first["type"] == "rating" and first["timestamp"] == float(ml.timestamps[0])
    ids = [e["event_id"] for e in islice(movielens_events(ml), 1000)]
    assert len(set(ids)) == 1000
    assert RECBOLE_WHEEL_SHA256.startswith("9c994820")


def test_fetch_movielens_command() -> None:
    result = CliRunner().invoke(data_app, ["fetch-movielens"])
    assert result.exit_code == 0, result.output
    assert "100,000 ratings, 943 users, 1,682 items" in result.output
