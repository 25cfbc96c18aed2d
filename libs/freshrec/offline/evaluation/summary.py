"""The parts of `summary.json` that describe a run rather than score it."""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from freshrec.offline.evaluation.config import EvalConfig
from freshrec.offline.evaluation.prequential import RunResult
from freshrec.offline.evaluation.stores import StoreKind
from freshrec.offline.evaluation.stream import EvalStream
from freshrec.offline.evaluation.sweeps import SWEPT_TABLES
from freshrec.table import CollisionStats, TablesConfig

__all__ = ["collision_summary", "iso_time", "run_meta", "table_rows"]


def collision_summary(stats: Mapping[str, CollisionStats]) -> dict[str, Any]:
    """The hashing run's collision figures, overall and per table.

    Args:
        stats: each hashed table's `collision_stats()`.

    Returns:
        `collision_rate` over all tables and a `collisions` entry per table.
    """
    seen = sum(s.ids_seen for s in stats.values())
    colliding = sum(s.colliding_ids for s in stats.values())
    return {
        "collision_rate": colliding / seen if seen else 0.0,
        "collisions": {
            name: {
                "buckets": s.buckets,
                "ids_seen": s.ids_seen,
                "buckets_used": s.buckets_used,
                "colliding_ids": s.colliding_ids,
                "collision_rate": s.collision_rate,
            }
            for name, s in stats.items()
        },
    }


def table_rows(result: RunResult) -> dict[str, Any]:
    """How many rows a run's tables held: at the end, at most, per table and per window.

    Args:
        result: the run.

    Returns:
        `rows`, `rows_max`, `rows_by_table` and `rows_per_window`.
    """
    swept = sum(result.rows[name] for name in SWEPT_TABLES)
    return {
        "rows": swept,
        "rows_max": max([swept, *result.rows_per_window]),
        "rows_by_table": dict(result.rows),
        "rows_per_window": list(result.rows_per_window),
    }


def iso_time(t: float) -> str:
    """Unix seconds `t` as an ISO 8601 UTC time to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run_meta(
    *,
    data: str,
    stream: EvalStream,
    config: EvalConfig,
    tables: TablesConfig,
    batches: list[tuple[int, int]],
    sweep_batches: list[tuple[int, int]],
    frozen_at: float,
    seed: int,
    store: StoreKind,
) -> dict[str, Any]:
    """The `meta` entry of the summary: the data, its windows, the settings, the versions.

    Args:
        data: where the events came from.
        stream: the prepared stream.
        config: the evaluation settings.
        tables: the main run's tables.
        batches: the main run's `(start, stop)` event batches.
        sweep_batches: the sweeps' batches.
        frozen_at: event time at which the `frozen` copy stopped training.
        seed: the run's seed.
        store: the backend the tables lived in.

    Returns:
        A JSON-serialisable dict.
    """
    times = stream.event_time
    edges = stream.window_edges
    return {
        "data": data,
        "events": stream.n_events,
        "examples": stream.n_examples,
        "positives": int(stream.ex_label.sum()),
        "queries": len(stream.queries),
        "users": int(stream.universe["user"].shape[0]),
        "items": int(stream.catalog.shape[0]),
        "first_event": iso_time(float(times[0])),
        "last_event": iso_time(float(times[-1])),
        "windows": [
            {
                "events": [int(edges[w]), int(edges[w + 1])],
                "until": iso_time(float(times[max(int(edges[w + 1]) - 1, 0)])),
            }
            for w in range(edges.shape[0] - 1)
        ],
        "seed": seed,
        "store": store,
        "batch_size": config.batch_size,
        "max_batch_span_s": config.max_batch_span_s,
        "batches": len(batches),
        "sweep_max_batch_span_s": config.sweep_max_batch_span_s,
        "sweep_batches": len(sweep_batches),
        "k": config.k,
        "rank_sample": config.rank_sample,
        "frozen_at": iso_time(frozen_at),
        "staleness_s": dict(config.staleness),
        "hashing_memory_ratio": config.hashing_memory_ratio,
        "popularity_prior": config.popularity_prior,
        "user_context": config.user_context,
        "dense_lr": config.trainer.dense_lr,
        "tables": tables.model_dump(mode="json"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
