"""Prometheus metrics of the retrieval index and its follower.

The `index` label names the index (the item table it follows); it never carries item ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from freshrec.metrics import LATENCY_BUCKETS_S

__all__ = [
    "FOLLOW_ERRORS",
    "INDEX_AGE",
    "INDEX_APPLY_DELAY",
    "INDEX_CHANGES",
    "INDEX_CHURN_SINCE_TRAINING",
    "INDEX_FEED_LAG",
    "INDEX_ITEMS",
    "INDEX_LIST_IMBALANCE",
    "INDEX_PROBE_RECALL",
    "INDEX_REBUILDING",
    "INDEX_REBUILDS",
    "INDEX_VERSION",
]

INDEX_ITEMS = Gauge(
    "freshrec_index_items",
    "Items held by the retrieval index.",
    ["index"],
)
INDEX_VERSION = Gauge(
    "freshrec_index_version",
    "Content version of the retrieval index; increases with every applied change.",
    ["index"],
)
INDEX_AGE = Gauge(
    "freshrec_index_age_seconds",
    "Seconds since the index follower last applied a change (or built the index).",
    ["index"],
)
INDEX_FEED_LAG = Gauge(
    "freshrec_index_feed_lag_seconds",
    "How far the index trails its change feed: 0 while polls reach the end of the feed, else "
    "seconds since the last poll that did.",
    ["index"],
)
INDEX_APPLY_DELAY = Histogram(
    "freshrec_index_apply_delay_seconds",
    "Per poll, seconds from the write of its oldest change-feed entry to the index serving "
    "it (only for stores whose cursors carry the write time, as Redis stream ids do).",
    ["index"],
    buckets=LATENCY_BUCKETS_S,
)
INDEX_REBUILDING = Gauge(
    "freshrec_index_rebuilding",
    "1 while a full rebuild or retrain of the index runs in the background (searches are "
    "served by the previous index meanwhile), else 0.",
    ["index"],
)
INDEX_REBUILDS = Counter(
    "freshrec_index_rebuilds_total",
    "Full index rebuilds, by reason (bootstrap, feed_trimmed, manual; train, grown, shrunk, "
    "churn, imbalance, recall, recall_floor: IVF retrains; tombstones: HNSW compaction).",
    ["index", "reason"],
)
INDEX_LIST_IMBALANCE = Gauge(
    "freshrec_index_list_imbalance",
    "IVF list imbalance at the last drift check, relative to right after training (1: as "
    "trained; the index retrains above max_imbalance_growth).",
    ["index"],
)
INDEX_PROBE_RECALL = Gauge(
    "freshrec_index_probe_recall",
    "Recall@probe_k of recent real queries against an exact scan, at the last drift check.",
    ["index"],
)
INDEX_CHURN_SINCE_TRAINING = Gauge(
    "freshrec_index_churn_since_training",
    "Ids upserted or removed since the IVF index was last trained, over its trained size, at "
    "the last drift check (the index retrains at retrain_churn_fraction).",
    ["index"],
)
INDEX_CHANGES = Counter(
    "freshrec_index_changes_total",
    "Item ids applied to the index from the change feed, by what was done (upsert, remove).",
    ["index", "op"],
)
FOLLOW_ERRORS = Counter(
    "freshrec_index_follow_errors_total",
    "Polls of the change feed that failed (the follower retries with backoff).",
    ["index"],
)
