"""Benchmark catalogs: item vectors and user queries for the retrieval and ranker benchmarks.

- `gaussian`: i.i.d. N(0, 1) items and queries, no structure (the worst case for any
  approximate index);
- `clustered`: 1,000 Gaussian centres with spread 0.5 around each;
- `trained`: the item rows the project's own `OnlineTrainer` learns from a
  `LatentFactorWorld` stream (every item rated `events_per_item` times, tastes drifting),
  trained in-process over the in-memory table backend; the queries are the trained user
  rows as the ranker forms them (`retrieval_query`: last component 1, meeting the item
  bias). Built once per parameter set and cached as an npz under
  `~/.cache/freshrec/bench/` (`FRESHREC_BENCH_CACHE` overrides the directory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.progress import Progress

from freshrec.offline.data.synthetic import LatentFactorConfig, LatentFactorWorld
from freshrec.settings import default_table_config_path
from freshrec.table import InMemoryTableBackend, load_tables, open_tables
from freshrec.table.base import FloatArray, IdArray
from freshrec.training import ExampleConfig, Message, OnlineTrainer, TrainerConfig

__all__ = ["CATALOG_KINDS", "Catalog", "bench_cache_dir", "make_catalog", "trained_catalog"]

logger = logging.getLogger(__name__)

CATALOG_KINDS = ("trained", "gaussian", "clustered")
# Bumped whenever the way a trained catalog is built changes, so stale caches are not used.
_FORMAT = 1
# The retrieval softmax is (batch, batch + negatives): throughput falls with larger batches
# (measured in-process: 15,700 events/s at 1,024, 11,900 at 2,048, 6,600 at 4,096).
TRAIN_BATCH = 1024
_TABLES = default_table_config_path()


@dataclass(frozen=True)
class Catalog:
    """Items to index and queries to search them with.

    Attributes:
        kind: one of `CATALOG_KINDS`.
        ids: `(N,)` uint64 item ids.
        items: `(N, D)` float32 item vectors.
        queries: `(Q, D)` float32 query vectors.
        built: how the catalog was made (parameters, timings, cache file).
    """

    kind: str
    ids: IdArray
    items: FloatArray
    queries: FloatArray
    built: dict[str, Any] = field(default_factory=dict)


def bench_cache_dir() -> Path:
    """Where built benchmark inputs are cached (`FRESHREC_BENCH_CACHE` or the default)."""
    override = os.environ.get("FRESHREC_BENCH_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "freshrec" / "bench"


def _random_ids(n: int, rng: np.random.Generator) -> IdArray:
    ids = np.unique(rng.integers(0, 2**64 - 1, size=n + n // 50 + 10, dtype=np.uint64))
    chosen: IdArray = rng.permutation(ids)[:n]
    return chosen


def make_catalog(kind: str, n_items: int, n_queries: int, dim: int, seed: int) -> Catalog:
    """A catalog of `kind` with `n_items` items and `n_queries` queries.

    Args:
        kind: `trained`, `gaussian` or `clustered`.
        n_items: catalog size.
        n_queries: queries drawn (for `trained`: a seeded sample of the trained users).
        dim: vector dimension (`trained` uses the item table's, 32 by default).
        seed: seeds the draw.

    Returns:
        The catalog.
    """
    rng = np.random.default_rng(seed)
    if kind == "trained":
        catalog = trained_catalog(LatentFactorConfig(n_items=n_items), seed=seed)
        pick = rng.choice(catalog.queries.shape[0], size=n_queries, replace=False)
        return Catalog(kind, catalog.ids, catalog.items, catalog.queries[pick], catalog.built)
    if kind == "gaussian":
        items = rng.standard_normal((n_items, dim), dtype=np.float32)
        queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
        return Catalog(kind, _random_ids(n_items, rng), items, queries, {"how": "iid N(0, 1)"})
    if kind != "clustered":
        raise ValueError(f"unknown catalog {kind!r}; expected one of {CATALOG_KINDS}")
    centres = rng.standard_normal((1_000, dim), dtype=np.float32)

    def draw(n: int) -> FloatArray:
        noise = 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
        drawn: FloatArray = centres[rng.integers(0, centres.shape[0], size=n)] + noise
        return drawn

    items = draw(n_items)
    how = {"how": "1,000 Gaussian centres, spread 0.5"}
    return Catalog(kind, _random_ids(n_items, rng), items, draw(n_queries), how)


def _trainer_config() -> TrainerConfig:
    # ratings need no impression join; expiry and publishing are irrelevant to the rows
    return TrainerConfig(
        publish_interval_s=1e9,
        expire_every_batches=1_000_000,
        stats_interval_s=1e9,
        examples=ExampleConfig(sampled_negatives=0),
    )


def _cache_file(config: LatentFactorConfig, seed: int) -> tuple[Path, dict[str, Any]]:
    params = {
        "format": _FORMAT,
        "world": config.model_dump(),
        "seed": seed,
        "batch": TRAIN_BATCH,
        "trainer": _trainer_config().model_dump(mode="json"),
        "tables": hashlib.sha256(_TABLES.read_bytes()).hexdigest()[:16],
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    return bench_cache_dir() / f"trained-{config.n_items}-{digest}.npz", params


def trained_catalog(config: LatentFactorConfig, seed: int = 0) -> Catalog:
    """The item and user rows `OnlineTrainer` learns from the world's stream (cached).

    Args:
        config: the latent-factor world.
        seed: seeds the world and its stream.

    Returns:
        A `trained` catalog: `(N, 32)` item rows of the items the trainer wrote (every item
        of the world), `(U, 32)` retrieval queries of every trained user.
    """
    path, params = _cache_file(config, seed)
    if path.exists():
        with np.load(path) as cached:
            built = json.loads(str(cached["built"]))
            built["cache"] = {"file": str(path), "hit": True}
            return Catalog("trained", cached["ids"], cached["items"], cached["queries"], built)
    started = time.perf_counter()
    tables = open_tables(load_tables(_TABLES), InMemoryTableBackend())
    trainer = OnlineTrainer(tables, _trainer_config())
    world = LatentFactorWorld(config, seed)
    total = config.n_items * config.events_per_item
    offset = 0
    with Progress(transient=True) as progress:
        task = progress.add_task(f"training a {config.n_items:,}-item catalog", total=total)
        for block in world.rating_blocks(TRAIN_BATCH):
            messages = [
                Message("events", 0, offset + j, orjson.dumps({"v": 1, **e, "accepted_at": t}))
                for j, e in enumerate(block)
                for t in (e["timestamp"],)
            ]
            trainer.train_batch(messages)
            offset += len(messages)
            progress.update(task, advance=len(messages))
    train_s = time.perf_counter() - started
    items = [rows for rows in tables.item.export()]
    users = [rows for rows in tables.user.export()]
    ids = np.concatenate([r.ids for r in items])
    vectors = np.concatenate([r.vectors for r in items]).astype(np.float32)
    queries = np.concatenate([r.vectors for r in users]).astype(np.float32)
    queries[:, -1] = 1.0  # `retrieval_query`: the last component meets the item bias
    built = {
        "how": "OnlineTrainer over the in-memory table, LatentFactorWorld ratings",
        "params": params,
        "events": offset,
        "train_s": round(train_s, 1),
        "events_per_s": round(offset / train_s, 1),
        "users": int(queries.shape[0]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, ids=ids, items=vectors, queries=queries, built=json.dumps(built))
    partial.rename(path)
    logger.info("trained catalog: %s", built)
    built["cache"] = {"file": str(path), "hit": False}
    return Catalog("trained", ids, vectors, queries, built)
