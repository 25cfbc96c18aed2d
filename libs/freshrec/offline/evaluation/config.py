"""Knobs of the prequential evaluation, with the defaults `freshrec eval` uses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from freshrec.errors import ConfigError
from freshrec.models.model import DEFAULT_LIKE_WEIGHT
from freshrec.offline.evaluation.peers import AlsConfig
from freshrec.training.trainer import TrainerConfig

__all__ = ["DEFAULT_STALENESS", "EvalConfig"]

DEFAULT_STALENESS: tuple[tuple[str, float], ...] = (
    ("stale_1min", 60.0),
    ("stale_10min", 600.0),
    ("stale_1h", 3600.0),
)
"""Serving-side sync intervals compared with fresh serving: (method name, seconds of event time)."""


@dataclass(frozen=True)
class EvalConfig:
    """How the replay is cut, scored and swept.

    Attributes:
        batch_size: events per training micro-batch, at most.
        max_batch_span_s: a micro-batch never spans more event time than this (None: no
            limit). A streaming trainer commits what arrived within its poll window, so a
            replay must not let one batch swallow hours of history: predictions inside a
            batch come from the state before it, so the span is the floor of every
            staleness the replay can show.
        windows: the stream is cut into this many windows of equal event count for the
            per-window metrics.
        k: cut-off of Recall@k and NDCG@k.
        rank_sample: share of positive examples that become ranking queries, picked by a
            hash of (seed, event id, item), so the same queries are asked of every method.
        staleness: (method name, sync interval in seconds of event time) of each stale
            serving copy.
        frozen_fraction: `frozen` trains on this leading share of the stream's event time.
        admission_min_counts: counting-filter thresholds swept on the user and item tables
            (0: no filter).
        expiry_days: event-time expiry windows swept on the user and item tables (None: no
            expiry).
        sweep_max_batch_span_s: the sweeps' replays use this span limit instead of
            `max_batch_span_s` (None: no limit). They compare table settings that act over
            days and weeks, where a finer cut only costs time; with the same value as
            `max_batch_span_s` the main run doubles as the sweeps' baseline.
        hashing_memory_ratio: hashing buckets per table = this times the collisionless run's
            final row count of that table (1.0: the same memory).
        trainer_auc_window: the trainer's own streaming-AUC gauge keeps this many predictions
            (its default is 20,000). The gauge re-sorts its whole window after every batch,
            which at thousands of small batches costs more than the scoring; the harness
            computes every metric itself, so the gauge is kept short (None: the default).
        popularity_prior: pseudo-count that shrinks an item's positive share toward the
            global one in the popularity baseline's probabilities.
        user_context: attach the user's age, gender and occupation to MovieLens events as
            context features.
        peers: replay the item-to-item co-occurrence and ALS peers in the main run.
        als: the ALS peer's knobs.
        cooccurrence_recent: the co-occurrence peer scores from each user's last this many
            items (None: the whole history).
        like_weight: the serving order's weight of `log P(like | interact)` against
            `log P(interact)` (the ranker's `FRESHREC_RANKER__LIKE_WEIGHT`).
        candidates: retrieval candidates the ranking head re-orders, as the ranker's
            `FRESHREC_RANKER__CANDIDATES` (None: every item).
        trainer: the trainer's knobs; `batch_size` is taken from this config, and the dense
            model's seed from the run's seed.
    """

    batch_size: int = 16
    max_batch_span_s: float | None = 600.0
    windows: int = 10
    k: int = 50
    rank_sample: float = 0.1
    staleness: tuple[tuple[str, float], ...] = DEFAULT_STALENESS
    frozen_fraction: float = 0.5
    admission_min_counts: tuple[int, ...] = (0, 2, 5, 10)
    expiry_days: tuple[float | None, ...] = (7.0, 30.0, 90.0, None)
    sweep_max_batch_span_s: float | None = None
    hashing_memory_ratio: float = 1.0
    trainer_auc_window: int | None = 1024
    popularity_prior: float = 10.0
    user_context: bool = True
    peers: bool = True
    als: AlsConfig = field(default_factory=AlsConfig)
    cooccurrence_recent: int | None = 10
    like_weight: float = DEFAULT_LIKE_WEIGHT
    candidates: int | None = 500
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        for span in (self.max_batch_span_s, self.sweep_max_batch_span_s):
            if span is not None and not span > 0:
                raise ConfigError("batch span limits must be > 0 (or None)")
        if self.windows < 1:
            raise ConfigError("windows must be >= 1")
        if self.k < 1:
            raise ConfigError("k must be >= 1")
        if not 0.0 <= self.rank_sample <= 1.0:
            raise ConfigError("rank_sample must be in [0, 1]")
        if not 0.0 < self.frozen_fraction < 1.0:
            raise ConfigError("frozen_fraction must be in (0, 1)")
        if not self.hashing_memory_ratio > 0:
            raise ConfigError("hashing_memory_ratio must be > 0")
        if self.trainer_auc_window is not None and self.trainer_auc_window < 1:
            raise ConfigError("trainer_auc_window must be >= 1 (or None)")
        if self.like_weight < 0:
            raise ConfigError("like_weight must be >= 0")
        if self.candidates is not None and self.candidates < 1:
            raise ConfigError("candidates must be >= 1 (or None)")
        if self.popularity_prior < 0:
            raise ConfigError("popularity_prior must be >= 0")
        names = [name for name, _ in self.staleness]
        reserved = {"online", "hashing", "frozen", "popularity", "cooccurrence", "als"}
        reserved |= {"online_retrieval", "online_no_user"}
        if len(set(names)) != len(names) or reserved & set(names):
            raise ConfigError(f"staleness names must be unique and not in {sorted(reserved)}")
        if any(not (interval > 0 and math.isfinite(interval)) for _, interval in self.staleness):
            raise ConfigError("staleness intervals must be finite and > 0")
        if any(m < 0 for m in self.admission_min_counts):
            raise ConfigError("admission_min_counts must be >= 0")
        if any(d is not None and not d > 0 for d in self.expiry_days):
            raise ConfigError("expiry_days must be > 0 (or None)")
