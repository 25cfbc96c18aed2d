"""Recall under churn: an IVF index following a live Redis table through `IndexFollower`.

The trained catalog is written into an item table of a scratch Redis namespace, with
event times spread so that a steady 0.1 % of the catalog per minute of feed time falls
out of the table's event-time expiry (removed by `expire`, announced on the change feed
as tombstones). Every second of the run the feed clock advances one second, `expire`
runs, and 1 % per minute of the catalog is upserted: an item re-trained towards a user
(its vector plus `STEP` times the query of a random trained user outside the sampled
ones, as a few training steps would move it). With `shift` > 0 the catalog also moves:
each upserted item is offset by `shift` mean item norms along one direction no centroid
was trained on, and half the sampled users' tastes move the same way (a new season),
gradually: a user's offset grows with feed time, reaching one mean query norm at the end
of the run, since a trained user vector moves only as its user meets the moved items. (How
a sudden jump of the same size fares against the bootstrapped index, before any item
moved, is measured first and recorded as `users_jump_at_start`.)

The follower applies both to the index, whose retrain policy is set by `RETRAIN_POLICY`:
it retrains in the background when a drift check finds the recall probe under a floor or
fallen, the lists crowded, or when a set share of the catalog was rewritten since the last
training. Every 5 s the sampled users search one per call (as the ranker does) and
recall@100 is measured against an exact scan of what the table holds at that moment.
Writes `churn.json` and `retrieval_churn.png` (`churn_shift.*` with a shift): the samples,
the drift checks, each retrain (reason, start, swap) and the index's `/metrics` lines at
every swap and at the end.

Run: ``freshrec bench retrieval --churn --minutes 3 [--shift 2]``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, generate_latest
from rich.progress import Progress

from freshrec.offline.bench.catalog import Catalog, trained_catalog
from freshrec.offline.bench.ranker import clear_namespace
from freshrec.offline.bench.retrieval import DIM, SEED, K
from freshrec.offline.data.synthetic import LatentFactorConfig
from freshrec.retrieval import FaissRetriever, IndexFollower, IvfConfig
from freshrec.table.config import ExpiryConfig, SgdConfig, TableConfig, ZerosInit
from freshrec.table.records import Rows
from freshrec.table.redis import RedisEmbeddingStore, RedisTableBackend

__all__ = ["run_churn_bench"]

logger = logging.getLogger(__name__)

UPSERT_PER_MIN = 0.01
EXPIRE_PER_MIN = 0.001
STEP = 0.1
N_USERS = 200
T0 = 1_700_000_000.0
# Initial event times span 1 / EXPIRE_PER_MIN minutes, so that share crosses the horizon
# each minute of feed time.
EXPIRE_AFTER_S = 60.0 / EXPIRE_PER_MIN
INDEX_NAME = "churn"
# The index's retrain knobs here (the rest at their defaults). Checks every 0.1 % of the
# catalog (about every 5.5 s of this feed) so a falling probe is seen within seconds; a
# floor of 0.97 leaves the 0.95 target room for the recall lost while a retrain runs; a
# retrain once 2 % of the catalog was rewritten, so that a 3-minute run (3.3 % rewritten)
# shows what a retrain and its swap do to recall even when nothing drifts.
RETRAIN_POLICY: dict[str, float] = {
    "drift_check_fraction": 0.001,
    "min_probe_recall": 0.97,
    "retrain_churn_fraction": 0.02,
}
_METRICS = (
    "freshrec_index_rebuilds_total",
    "freshrec_index_rebuilding",
    "freshrec_index_list_imbalance",
    "freshrec_index_probe_recall",
    "freshrec_index_churn_since_training",
    "freshrec_index_items",
)


def _table() -> TableConfig:
    return TableConfig(
        name="item",
        dim=DIM,
        initializer=ZerosInit(),
        optimizer=SgdConfig(lr=1.0),
        # one bucket per minute of feed time: each expire call scans one small bucket
        expiry=ExpiryConfig(clock="event", expire_after_s=EXPIRE_AFTER_S, buckets=1000),
    )


def _rows(ids: np.ndarray, vectors: np.ndarray, event_time: np.ndarray) -> Rows:
    n = ids.shape[0]
    return Rows(
        ids=ids,
        vectors=vectors.astype(np.float32),
        state=np.zeros((n, 0), dtype=np.float32),
        event_time=event_time.astype(np.float64),
        wall_time=np.full(n, time.time()),
        count=np.ones(n, dtype=np.int64),
    )


class _Mirror:
    """What the table holds, kept by the driver: the exact reference of every sample."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.position = {int(i): p for p, i in enumerate(ids.tolist())}
        self.ids = ids.copy()
        self.vectors = vectors.copy()
        self.live = np.ones(ids.shape[0], dtype=np.bool_)

    def upsert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        at = np.array([self.position[int(i)] for i in ids.tolist()], dtype=np.int64)
        self.vectors[at] = vectors
        self.live[at] = True

    def remove(self, ids: np.ndarray) -> None:
        at = [self.position[int(i)] for i in ids.tolist() if int(i) in self.position]
        self.live[np.array(at, dtype=np.int64)] = False

    def top(self, queries: np.ndarray, k: int) -> list[set[int]]:
        live = np.flatnonzero(self.live)
        scores = queries @ self.vectors[live].T
        best = np.argpartition(-scores, k, axis=1)[:, :k]
        return [set(self.ids[live[row]].tolist()) for row in best]


def _sample(retriever: FaissRetriever, mirror: _Mirror, queries: np.ndarray) -> np.ndarray:
    """`(Q,)` recall@K of each query, searched one per call as the ranker asks."""
    truth = mirror.top(queries, K)
    recall = np.zeros(len(truth))
    for row, expected in enumerate(truth):
        found = retriever.search(queries[row : row + 1], K).ids[0]
        recall[row] = len(expected.intersection(found.tolist())) / K
    return recall


def _recalls(recall: np.ndarray, shifted: bool) -> dict[str, float]:
    """Mean recall, and per group when half the users move (even rows: the moved ones)."""
    figures = {"recall_at_100": round(float(recall.mean()), 4)}
    if shifted:
        figures["moved_users"] = round(float(recall[::2].mean()), 4)
        figures["other_users"] = round(float(recall[1::2].mean()), 4)
    return figures


def _lag(cursor: str, written: float) -> float:
    """Seconds the last change the follower applied trails the bench's last write (a Redis
    stream id '<ms>-<seq>' carries the write time)."""
    return round(max(0.0, written - int(cursor.split("-", maxsplit=1)[0]) / 1000.0), 2)


def _metric_lines() -> list[str]:
    """The index's lines of the Prometheus exposition, as `/metrics` serves them."""
    text = generate_latest(REGISTRY).decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith(_METRICS) and f'index="{INDEX_NAME}"' in line
    ]


def _load(store: RedisEmbeddingStore, ids: np.ndarray, items: np.ndarray) -> None:
    rng = np.random.default_rng(SEED)
    times = T0 - EXPIRE_AFTER_S + np.asarray(rng.uniform(0.0, EXPIRE_AFTER_S, size=ids.shape[0]))
    for start in range(0, ids.shape[0], 5_000):
        part = slice(start, start + 5_000)
        store.import_rows(_rows(ids[part], items[part], times[part]))


def _churn_step(
    store: RedisEmbeddingStore,
    mirror: _Mirror,
    users: np.ndarray,
    *,
    offset: np.ndarray,
    watermark: float,
    n_upserts: int,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """One second of feed time: expiry, then `n_upserts` items re-trained towards users."""
    removed = store.expire(watermark)
    mirror.remove(removed)
    live = np.flatnonzero(mirror.live)
    if n_upserts and live.shape[0]:
        at = rng.choice(live, size=min(n_upserts, live.shape[0]), replace=False)
        towards = users[rng.integers(0, users.shape[0], size=at.shape[0])]
        vectors = mirror.vectors[at] + STEP * towards + offset
        ids = mirror.ids[at]
        store.import_rows(_rows(ids, vectors, np.full(ids.shape[0], watermark)))
        mirror.upsert(ids, vectors)
    return n_upserts, int(removed.shape[0])


def run_churn_bench(
    redis_url: str,
    out: Path,
    *,
    minutes: float = 3.0,
    items: int = 100_000,
    nprobe: int = 128,
    shift: float = 0.0,
) -> dict[str, Any]:
    """Follow a churning table for `minutes`, sampling recall@100 every 5 s.

    Args:
        redis_url: the Redis the scratch item table lives in (deleted afterwards).
        out: output directory (created if missing).
        minutes: run length (wall time = feed time).
        items: catalog size (the trained catalog of that size).
        nprobe: the IVF index's `nprobe`.
        shift: how far upserted items (and half the sampled users) move, in mean item norms.

    Returns:
        The figures written to `churn.json`.
    """
    catalog = trained_catalog(LatentFactorConfig(n_items=items), seed=SEED)
    rng = np.random.default_rng(SEED)
    population = _population(catalog, shift, rng)
    namespace = f"bench-churn-{uuid.uuid4().hex[:8]}"
    backend = RedisTableBackend.from_url(redis_url, namespace)
    config = IvfConfig.model_validate({"nprobe": nprobe, **RETRAIN_POLICY})
    retriever = FaissRetriever(DIM, config, name=INDEX_NAME)
    try:
        store = backend.store(_table(), feed_maxlen=max(100_000, 2 * items))
        _load(store, catalog.ids, catalog.items)
        mirror = _Mirror(catalog.ids, catalog.items)
        follower = IndexFollower(store, retriever, name=INDEX_NAME, snapshot_interval_s=None)
        started = time.perf_counter()
        follower.bootstrap()
        bootstrap_s = time.perf_counter() - started
        jump = _recalls(_sample(retriever, mirror, population.queries_at(1.0)), shift > 0)
        follower.start()
        samples, events = _drive(
            store, retriever, mirror, population, follower, minutes=minutes, rng=rng
        )
        follower.stop()
    finally:
        retriever.close()
        backend.close()
        clear_namespace(redis_url, namespace)
    result = {
        "benchmark": "retrieval_churn",
        "catalog": {"kind": "trained", "items": items, "built": catalog.built},
        "index": config.model_dump(),
        "shift": shift,
        "upserts_per_min": UPSERT_PER_MIN,
        "expiries_per_min": EXPIRE_PER_MIN,
        "minutes": minutes,
        "bootstrap_s": round(bootstrap_s, 2),
        "users_jump_at_start": jump if shift > 0 else None,
        **_figures(retriever, samples, events),
    }
    out.mkdir(parents=True, exist_ok=True)
    name = "churn" if shift == 0 else "churn_shift"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    _plot(result, out / f"retrieval_{name}.png")
    return result


@dataclass(frozen=True)
class _Population:
    """The sampled users, the other users (upserts move towards them) and the offsets."""

    queries: np.ndarray  # (N_USERS, D) as at the start
    users: np.ndarray  # (U, D)
    item_offset: np.ndarray  # (D,) added to every upserted item
    user_offset: np.ndarray  # (N_USERS, D) reached by the end of the run (moved rows only)

    def queries_at(self, progress: float) -> np.ndarray:
        """`(N_USERS, D)` queries when `progress` (0 to 1) of the run has passed."""
        return np.ascontiguousarray(self.queries + progress * self.user_offset, np.float32)


def _population(catalog: Catalog, shift: float, rng: np.random.Generator) -> _Population:
    """Sampled users and the others; upserted items move `shift` mean item norms along one
    direction, every other sampled user one mean query norm (capped by `shift`) the same
    way by the end of the run."""
    picked = rng.permutation(catalog.queries.shape[0])
    queries = catalog.queries[picked[:N_USERS]].copy()
    direction = rng.standard_normal(DIM).astype(np.float32)
    direction[-1] = 0.0  # the bias component stays the model's
    direction /= np.linalg.norm(direction)
    offset = shift * float(np.linalg.norm(catalog.items, axis=1).mean()) * direction
    # every other user moves: the probe, which keeps the latest searches, sees both kinds
    user_offset = np.zeros_like(queries)
    user_offset[::2] = float(np.linalg.norm(queries, axis=1).mean()) * direction * min(shift, 1.0)
    return _Population(queries, catalog.queries[picked[N_USERS:]], offset, user_offset)


def _figures(
    retriever: FaissRetriever, samples: list[dict[str, Any]], events: dict[str, Any]
) -> dict[str, Any]:
    """Recall over the run, the drift checks and retrains, and the index's metric lines."""
    wall_start = events["wall_start"]
    return {
        "min_recall": min(s["recall_at_100"] for s in samples),
        "meets_target": all(s["recall_at_100"] >= 0.95 for s in samples),
        "retrains": retriever.rebuilds,
        "retrain_events": [
            {
                "reason": e.reason,
                "started_at_s": round(e.started_at - wall_start, 1),
                "swapped_at_s": round(e.swapped_at - wall_start, 1),
                "build_s": round(e.swapped_at - e.started_at, 1),
                "items": e.items,
                "metrics_after_swap": events["swap_metrics"].get(n, []),
            }
            for n, e in enumerate(retriever.rebuild_events)
        ],
        "drift_checks": [
            {
                "at_s": round(c.at - wall_start, 1),
                "imbalance_growth": round(c.imbalance_growth, 3),
                "churn": round(c.churn, 4),
                "recall": c.recall,
                "baseline_recall": c.baseline_recall,
                "reason": c.reason,
                "floor_suspended": c.floor_suspended,
            }
            for c in retriever.drift_checks
        ],
        "metrics": events["metrics"],
        "samples": samples,
    }


def _drive(
    store: RedisEmbeddingStore,
    retriever: FaissRetriever,
    mirror: _Mirror,
    population: _Population,
    follower: IndexFollower,
    *,
    minutes: float,
    rng: np.random.Generator,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The churn loop: one feed second per wall second, a recall sample every 5 s."""
    wall_start = time.time()
    duration = 60.0 * minutes
    per_second = UPSERT_PER_MIN * mirror.ids.shape[0] / 60.0
    owed = 0.0
    samples: list[dict[str, Any]] = []
    swap_metrics: dict[int, list[str]] = {}
    upserted = removed = 0
    with Progress(transient=True) as progress:
        task = progress.add_task("churn", total=duration)
        for second in range(int(duration) + 1):
            while time.time() < wall_start + second:
                time.sleep(0.01)
            owed += per_second
            ups, gone = _churn_step(
                store,
                mirror,
                population.users,
                offset=population.item_offset,
                watermark=T0 + second,
                n_upserts=int(owed),
                rng=rng,
            )
            owed -= ups
            upserted, removed = upserted + ups, removed + gone
            written = time.time()
            for n in range(len(swap_metrics), len(retriever.rebuild_events)):
                swap_metrics[n] = _metric_lines()  # what a scrape just after the swap shows
            if second % 5 == 0:
                time.sleep(0.3)  # the follower's poll applies what was just written
                queries = population.queries_at(second / duration)
                recall = _sample(retriever, mirror, queries)
                samples.append({
                    "t_s": second,
                    "wall_s": round(time.time() - wall_start, 1),
                    **_recalls(recall, bool(population.user_offset.any())),
                    "items": int(mirror.live.sum()),
                    "upserted": upserted,
                    "removed": removed,
                    "retrains": retriever.rebuilds,
                    "retraining": retriever.rebuilding,  # the old index served this sample
                    "follower_lag_s": _lag(follower.cursor, written),
                })  # fmt: skip
                logger.info("churn: %s", samples[-1])
            progress.update(task, completed=second)
    events = {"wall_start": wall_start, "swap_metrics": swap_metrics, "metrics": _metric_lines()}
    return samples, events


def _plot(result: dict[str, Any], path: Path) -> None:
    """Recall@100 over the run, with the drift checks and each retrain (running, swapped in)
    marked."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axis = plt.subplots(figsize=(8, 3.8))
    samples = result["samples"]
    walls, feeds = [s["wall_s"] for s in samples], [s["t_s"] for s in samples]

    def feed_time(wall_s: float) -> float:
        # a loaded machine runs the feed slower than the wall clock: plot on feed time
        return float(np.interp(wall_s, walls, feeds))

    axis.plot(feeds, [s["recall_at_100"] for s in samples], "o-", ms=3,
              label="recall@100 (every 5 s)")  # fmt: skip
    for group, style in (("moved_users", "--"), ("other_users", ":")):
        if group in samples[0]:
            axis.plot(feeds, [s[group] for s in samples], style, lw=1,
                      label=group.replace("_", " "))  # fmt: skip
    axis.axhline(0.95, color="grey", linestyle=":", label="0.95")
    for n, event in enumerate(result["retrain_events"]):
        begin, end = feed_time(event["started_at_s"]), feed_time(event["swapped_at_s"])
        axis.axvspan(begin, end, color="tab:orange", alpha=0.2,
                     label="retrain running (old index serves)" if n == 0 else None)  # fmt: skip
        axis.axvline(
            end, color="tab:red", alpha=0.7, label="retrain swapped in" if n == 0 else None
        )
        axis.annotate(event["reason"], (end, 1.0), xycoords=("data", "axes fraction"),
                      fontsize=7, rotation=90, va="top", ha="right")  # fmt: skip
    checks = [c for c in result["drift_checks"] if c["recall"] is not None]
    axis.plot([feed_time(c["at_s"]) for c in checks], [c["recall"] for c in checks], "x",
              color="tab:green", label="drift check (probe recall)")  # fmt: skip
    axis.set_xlabel("seconds of feed time")
    axis.set_ylabel("recall@100")
    catalog = result["catalog"]
    moving = f", moving {result['shift']} norms" if result["shift"] else ""
    axis.set_title(f"IVF under churn: {catalog['items']:,} trained items, 1 %/min upserted"
                   f"{moving}, 0.1 %/min expired", fontsize=9)  # fmt: skip
    axis.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
