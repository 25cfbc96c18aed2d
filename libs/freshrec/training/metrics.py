"""The trainer's Prometheus metrics (docs/operations.md lists them with their meaning)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from freshrec.metrics import BatchHistogram

__all__ = [
    "AUC",
    "BATCHES",
    "BatchLaps",
    "COMMIT_SECONDS",
    "DEAD_LETTERS",
    "DENSE_VERSION",
    "MEMBERS_AVERAGED",
    "DUPLICATES",
    "EVENTS_CONSUMED",
    "EXAMPLES",
    "FRESHNESS",
    "LOSS",
    "ROWS_CREATED",
    "ROWS_EXPIRED",
    "ROWS_FILTERED",
    "ROWS_WRITTEN",
    "STAGES",
    "STAGE_SECONDS",
    "TABLE_BYTES",
    "TABLE_ROWS",
    "WATERMARK",
]

EVENTS_CONSUMED = Counter(
    "freshrec_trainer_events_consumed_total", "Messages consumed from the events topic."
)
EXAMPLES = Counter("freshrec_trainer_examples_total", "Training examples built from events.")
BATCHES = Counter("freshrec_trainer_batches_total", "Micro-batches committed.")
DUPLICATES = Counter(
    "freshrec_trainer_duplicate_events_total",
    "Messages skipped because their event id was already trained (producer retries).",
)
DEAD_LETTERS = Counter(
    "freshrec_trainer_dead_letters_total",
    "Messages sent to the dead-letter topic, by reason kind.",
    ["reason"],
)
LOSS = Gauge("freshrec_trainer_loss", "Log loss of the last micro-batch (before its update).")
AUC = Gauge("freshrec_trainer_auc", "AUC of the most recent predictions, made before training.")
DENSE_VERSION = Gauge("freshrec_trainer_dense_version", "Last published dense model version.")
MEMBERS_AVERAGED = Gauge(
    "freshrec_trainer_members_averaged",
    "Trainers whose dense deltas the last publish summed (1: this one alone).",
)
WATERMARK = Gauge("freshrec_trainer_watermark_seconds", "Highest event time seen (unix s).")
ROWS_WRITTEN = Counter(
    "freshrec_table_rows_written_total", "Rows written by the trainer.", ["table"]
)
ROWS_CREATED = Counter("freshrec_table_rows_created_total", "Rows created.", ["table"])
ROWS_FILTERED = Counter(
    "freshrec_table_rows_filtered_total", "Updates dropped by the admission filter.", ["table"]
)
ROWS_EXPIRED = Counter("freshrec_table_rows_expired_total", "Rows removed by expiry.", ["table"])
TABLE_ROWS = Gauge("freshrec_table_rows", "Rows in the table.", ["table"])
TABLE_BYTES = Gauge("freshrec_table_bytes", "Estimated bytes the table uses in Redis.", ["table"])
FRESHNESS = BatchHistogram(
    "freshrec_freshness_event_to_row_seconds",
    "Time from an event accepted by ingest to its rows committed in the table.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
STAGES = ("expire", "decode", "features", "pull", "model", "push", "commit")
"""Where a micro-batch's time goes, in order: `expire` (the expiry walk, every
`expire_every_batches` batches), `decode` (parse, validate, dedup, build
examples), `features` (hash ids, draw replayed pairs and negatives), `pull` (read rows),
`model` (forward, losses, backward, dense step), `push` (row updates and trainer state staged
into the transaction), `commit` (the transaction's round trip to the store)."""
STAGE_SECONDS = Counter(
    "freshrec_trainer_stage_seconds",
    "Seconds spent training micro-batches, by stage (see freshrec.training.metrics.STAGES).",
    ["stage"],
)
_STAGE_COUNTERS = {stage: STAGE_SECONDS.labels(stage) for stage in STAGES}


class BatchLaps:
    """A batch's stopwatch: each lap's time goes to its stage's `STAGE_SECONDS`."""

    def __init__(self) -> None:
        self._at = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        _STAGE_COUNTERS[stage].inc(now - self._at)
        self._at = now


COMMIT_SECONDS = Histogram(
    "freshrec_trainer_batch_duration_seconds",
    "Time to train and commit one micro-batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
