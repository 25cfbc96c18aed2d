"""The online trainer: micro-batches of consumed messages in, rows and offsets out, atomically.

One `train_batch` call:

1. decodes the messages (poison ones go to the dead-letter sink with their reason);
2. turns events into examples (`ExampleBuilder`: joins, windows, negatives);
3. pulls the batch's user, item and context rows, runs forward/backward in PyTorch, steps the
   dense optimizer, and stages the new rows with each table's own optimizer;
4. stages, in the **same** Redis transaction, the consumer's next offsets and the trainer
   checkpoint (dense parameters, dense optimizer state, example-builder state), and every
   `publish_interval_s` the serving copy of the dense parameters; then commits.

A crash anywhere before the commit loses nothing: on restart the trainer restores the
checkpoint and seeks to the stored offsets, so the batch is redone from the same state. A
crash after the commit never re-applies the batch. Batch boundaries depend only on the
offsets (`batch_size` messages, or fewer at the end of what is available), so an
interrupted run reproduces an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import Counter, Gauge, Histogram

from freshrec.metrics import BatchHistogram
from freshrec.models.features import context_row_ids, entity_row_ids, mean_pool
from freshrec.models.model import RankingModel
from freshrec.models.published import (
    ITEM_NAMES_KEY,
    PUBLISHED_MODEL_KEY,
    PUBLISHED_VERSION_KEY,
)
from freshrec.models.serialization import decode_tensors, encode_tensors
from freshrec.stream.base import Message
from freshrec.stream.events import ConsumedEvent, PoisonMessage, read_event
from freshrec.table.base import EmbeddingStore, IdArray, Pulled, Transaction
from freshrec.table.tables import Tables
from freshrec.threads import limit_compute_threads
from freshrec.training.auc import StreamingAuc
from freshrec.training.config import TrainerConfig
from freshrec.training.dedup import DedupWindow
from freshrec.training.examples import Example, ExampleBuilder

__all__ = [
    "BatchReport",
    "DeadLetterSink",
    "Message",
    "OnlineTrainer",
    "TrainerConfig",
    "checkpoint_key",
]

logger = logging.getLogger(__name__)

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
COMMIT_SECONDS = Histogram(
    "freshrec_trainer_batch_duration_seconds",
    "Time to train and commit one micro-batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


DeadLetterSink = Callable[[Message, str, str], None]
"""Receives a message the trainer cannot use, a reason code and a longer explanation."""


@dataclass(frozen=True)
class BatchReport:
    """What one micro-batch did."""

    messages: int
    examples: int
    dead_letters: int
    loss: float
    rows_written: int
    freshness_s: tuple[float, ...] = ()
    """Seconds from each example's event accepted by ingest to its rows committed."""


def checkpoint_key(group: str) -> str:
    """Metadata blob holding a consumer group's trainer checkpoint."""
    return f"trainer:{group}:checkpoint"


class OnlineTrainer:
    """Trains the model from micro-batches, committing rows, offsets and checkpoint atomically."""

    def __init__(
        self,
        tables: Tables,
        config: TrainerConfig,
        dead_letters: DeadLetterSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a trainer.

        Args:
            tables: the `user`, `item` and `context` stores; rows, offsets and checkpoint
                commit through their backend, in the consumer group's commit group.
            config: loop knobs.
            dead_letters: where poison messages go (None: logged and counted only).
            clock: wall clock, for publishing cadence and freshness.
        """
        self.tables = tables
        self.config = config
        limit_compute_threads(config.compute_threads)
        for name in self.tables.names():  # every series exists (at 0) from the start
            for counter in (ROWS_WRITTEN, ROWS_CREATED, ROWS_FILTERED, ROWS_EXPIRED):
                counter.labels(name)
        self._dead_letters = dead_letters
        self._clock = clock
        self.model = RankingModel(config.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.dense_lr)
        self.builder = ExampleBuilder(config.examples)
        self.auc = StreamingAuc()
        self.offsets: dict[tuple[str, int], int] = {}
        self.batches = 0
        self.published_version = 0
        self._last_publish = -math.inf
        self._last_stats = -math.inf
        self._unpublished = False
        self._meta = tables.backend
        self._offsets_key = f"offsets:{config.group}"
        self.dedup = DedupWindow(config.dedup_window, f"dedup:{config.group}")

    # ----------------------------------------------------------------- checkpoint

    def restore(self) -> dict[tuple[str, int], int]:
        """Load the committed checkpoint and offsets (fresh state when there is none).

        Returns:
            The next offset to consume per (topic, partition).
        """
        config_group = self.config.group
        raw = self._meta.get_hash(self._offsets_key, group=config_group)
        self.offsets = {}
        for name, value in raw.items():
            topic, _, partition = (name.decode() if isinstance(name, bytes) else name).rpartition(
                ":"
            )
            self.offsets[(topic, int(partition))] = int(value)
        self.dedup = DedupWindow(self.config.dedup_window, f"dedup:{config_group}")
        for (source, number), next_offset in self.offsets.items():
            ring = self._meta.get_blob(self.dedup.ring_key(source, number), group=config_group)
            self.dedup.load(source, number, ring, next_offset)
        blob = self._meta.get_blob(checkpoint_key(config_group), group=config_group)
        if blob is None:
            self._fresh_state()
        else:
            tensors, meta = decode_tensors(blob)
            self._load_dense(tensors)
            self.builder.load_state(bytes.fromhex(meta["builder"]))
            self.batches = int(meta["batches"])
            self.published_version = int(meta["published_version"])
            logger.info(
                "restored checkpoint: %d batches, %d partitions", self.batches, len(self.offsets)
            )
        return dict(self.offsets)

    def _fresh_state(self) -> None:
        """The state before any batch: what a restore finds when nothing was committed yet
        (also undoes a batch that failed to commit before the first checkpoint)."""
        self.model = RankingModel(self.config.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.dense_lr)
        self.builder = ExampleBuilder(self.config.examples)
        self.batches = 0
        self.published_version = 0

    def _dense_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"param.{k}": v for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for index, slots in opt["state"].items():
            for slot, value in slots.items():
                tensors[f"opt.{index}.{slot}"] = torch.as_tensor(value)
        return tensors

    def _load_dense(self, tensors: Mapping[str, torch.Tensor]) -> None:
        params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
        self.model.load_state_dict(params)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, index, slot = key.split(".", 2)
                state.setdefault(int(index), {})[slot] = value
        opt = self.optimizer.state_dict()
        opt["state"] = state
        self.optimizer.load_state_dict(opt)

    # ----------------------------------------------------------------- training

    def _decode(self, messages: Sequence[Message]) -> tuple[list[ConsumedEvent], list[float], int]:
        events: list[ConsumedEvent] = []
        accepted: list[float] = []
        dead = 0
        for message in messages:
            try:
                if message.value is None:
                    raise PoisonMessage("schema", "message has no value")
                event = read_event(message.value, max_bytes=self.config.max_message_bytes)
            except PoisonMessage as exc:
                dead += 1
                self.dedup.admit(message.topic, message.partition, message.offset, None)
                self._dead_letter(message, exc)
                continue
            if not self.dedup.admit(
                message.topic, message.partition, message.offset, event.event_id
            ):
                DUPLICATES.inc()
                continue
            events.append(event)
            accepted.append(event.accepted_at)
        return events, accepted, dead

    def _dead_letter(self, message: Message, exc: PoisonMessage) -> None:
        DEAD_LETTERS.labels(exc.reason).inc()
        if self._dead_letters is not None:
            self._dead_letters(message, exc.reason, exc.detail)
        else:
            logger.warning(
                "dropping poison message %s[%d]@%d: %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
            )

    def train_batch(self, messages: Sequence[Message]) -> BatchReport:
        """Train on one micro-batch and commit it with the consumer's next offsets.

        Args:
            messages: consecutive records; for each partition, in offset order.
        """
        start = time.perf_counter()
        if self.batches % self.config.expire_every_batches == 0 and self.builder.watermark > 0:
            self._expire(self.builder.watermark)
        events, accepted, dead = self._decode(messages)
        examples = self.builder.add(events, accepted)
        WATERMARK.set(self.builder.watermark)
        EVENTS_CONSUMED.inc(len(messages))
        EXAMPLES.inc(len(examples))

        for message in messages:
            self.offsets[(message.topic, message.partition)] = message.offset + 1
        self.batches += 1
        with self._meta.transaction(group=self.config.group) as txn:
            loss, written = self._step(examples, txn) if examples else (float("nan"), 0)
            txn.put_hash(
                self._offsets_key, {f"{t}:{p}": off for (t, p), off in self.offsets.items()}
            )
            for write in self.dedup.drain_writes():
                txn.put_blob_range(write.key, write.start, write.data)
            self._stage_checkpoint(txn)
            if examples:
                self._unpublished = True
            self._publish_if_due(txn)
        committed = self._clock()
        lags = np.maximum(committed - np.fromiter((e.accepted_at for e in examples), float), 0.0)
        FRESHNESS.observe_many(lags)
        freshness = tuple(lags.tolist())
        BATCHES.inc()
        COMMIT_SECONDS.observe(time.perf_counter() - start)
        if committed - self._last_stats >= self.config.stats_interval_s:
            self._last_stats = committed
            self.refresh_table_stats()
        if not math.isnan(loss):
            LOSS.set(loss)
        return BatchReport(len(messages), len(examples), dead, loss, written, freshness)

    def _step(self, examples: list[Example], txn: Transaction) -> tuple[float, int]:
        users = entity_row_ids("user", [e.user_id for e in examples])
        items = entity_row_ids("item", [e.item_id for e in examples])
        ctx_ids, ctx_rows = context_row_ids([e.context for e in examples])

        u = _Leaf.pull(self.tables.user, users)
        i = _Leaf.pull(self.tables.item, items)
        c = _Leaf.pull(self.tables.context, ctx_ids)

        context = mean_pool(c.gathered(), ctx_rows, len(examples), self.config.model.context_dim)

        labels = torch.tensor([e.label for e in examples], dtype=torch.float32)
        ranking, retrieval = self.model(u.gathered(), i.gathered(), context)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        loss_rank = bce(ranking, labels, reduction="sum")
        loss_retr = bce(retrieval, labels, reduction="sum")
        # a sum, not a batch mean: each row's gradient must not shrink as batches grow (the
        # per-row Adagrad/SGD steps are not scale-free); Adam on the dense part is
        total = loss_rank + self.config.retrieval_weight * loss_retr
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()

        with torch.no_grad():
            probs = torch.sigmoid(ranking + self.config.examples.logit_offset).numpy()
        self.auc.update(probs.astype(np.float64), labels.numpy().astype(np.float64))

        self._stage_item_names(i, examples, txn)
        times = np.array([e.event_time for e in examples], dtype=np.float64)
        written = 0
        for store, leaf, rows_times in (
            (self.tables.user, u, times),
            (self.tables.item, i, times),
            (self.tables.context, c, times[ctx_rows]),
        ):
            if leaf.pulled.ids.shape[0] == 0:
                continue
            name = store.config.name
            result = store.push(
                leaf.pulled, leaf.grad(), leaf.occurrences, leaf.latest(rows_times), txn
            )
            written += int(result.written.shape[0])
            ROWS_WRITTEN.labels(name).inc(int(result.written.shape[0]))
            ROWS_CREATED.labels(name).inc(result.created)
            ROWS_FILTERED.labels(name).inc(result.filtered)
        return float(loss_rank.item()) / len(examples), written

    @staticmethod
    def _stage_item_names(leaf: _Leaf, examples: list[Example], txn: Transaction) -> None:
        """Remember raw item ids of new rows so the ranker can answer with them."""
        new = ~leaf.pulled.exists
        if not new.any():
            return
        _, first = np.unique(leaf.inverse, return_index=True)  # first example of each row
        txn.put_hash(
            ITEM_NAMES_KEY,
            {
                str(int(leaf.pulled.ids[u])): examples[int(first[u])].item_id
                for u in np.flatnonzero(new)
            },
        )

    def _publish_if_due(self, txn: Transaction) -> bool:
        now = self._clock()
        if not self._unpublished or now - self._last_publish < self.config.publish_interval_s:
            return False
        self._stage_publish(txn)
        self._last_publish = now
        self._unpublished = False
        return True

    def publish_pending(self) -> bool:
        """Publish updates the last batches made but no publish carried yet (when idle).

        Returns:
            True when a new version was published.
        """
        if not self._unpublished:
            return False
        with self._meta.transaction(group=self.config.group) as txn:
            published = self._publish_if_due(txn)
            if published:  # the checkpoint carries the published version counter
                self._stage_checkpoint(txn)
        return published

    def _stage_checkpoint(self, txn: Transaction) -> None:
        meta = {
            "batches": self.batches,
            "published_version": self.published_version,
            "builder": self.builder.state().hex(),
        }
        txn.put_blob(checkpoint_key(self.config.group), encode_tensors(self._dense_tensors(), meta))

    def _stage_publish(self, txn: Transaction) -> None:
        self.published_version += 1
        meta = {
            "version": self.published_version,
            "published_at": self._clock(),
            "model": vars(self.config.model),
            "logit_offset": self.config.examples.logit_offset,
            "watermark": self.builder.watermark,
        }
        params = {k: v for k, v in self.model.state_dict().items()}
        txn.put_blob(PUBLISHED_MODEL_KEY, encode_tensors(params, meta))
        txn.put_hash(PUBLISHED_VERSION_KEY, {"version": self.published_version})
        DENSE_VERSION.set(self.published_version)

    def refresh_table_stats(self) -> None:
        """Set the table size gauges from each store's stats, and the AUC gauge."""
        AUC.set(self.auc.value())  # sorts the whole window: on this cadence, not per batch
        for store in self.tables:
            name = store.config.name
            stats = store.stats()
            TABLE_ROWS.labels(name).set(stats.rows)
            TABLE_BYTES.labels(name).set(stats.bytes)

    def _expire(self, watermark: float) -> None:
        for store in self.tables:
            name = store.config.name
            # event clock: removes idle rows; wall clock: reports rows Redis let go, so their
            # tombstones reach the change feed and the retrieval index
            if store.config.expiry is not None:
                removed = store.expire(watermark)
                ROWS_EXPIRED.labels(name).inc(int(removed.shape[0]))

    def state_summary(self) -> dict[str, Any]:
        """Figures for logs and readiness."""
        return {
            "batches": self.batches,
            "published_version": self.published_version,
            "watermark": self.builder.watermark,
            "offsets": {f"{t}:{p}": o for (t, p), o in self.offsets.items()},
            "auc": self.auc.value(),
        }


@dataclass
class _Leaf:
    """Unique rows of one table as a leaf tensor, plus the map back to the batch."""

    pulled: Pulled
    inverse: npt.NDArray[np.int64]
    occurrences: npt.NDArray[np.int64]
    tensor: torch.Tensor

    @classmethod
    def pull(cls, store: EmbeddingStore, ids: IdArray) -> _Leaf:
        unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        pulled = store.pull(unique.astype(np.uint64))
        tensor = torch.from_numpy(np.array(pulled.vectors, dtype=np.float32, copy=True))
        tensor.requires_grad_(True)
        return cls(pulled, inverse.astype(np.int64), counts.astype(np.int64), tensor)

    def gathered(self) -> torch.Tensor:
        return self.tensor[torch.from_numpy(self.inverse)]

    def grad(self) -> npt.NDArray[np.float32]:
        if self.tensor.grad is None:
            return np.zeros(self.pulled.vectors.shape, dtype=np.float32)
        return self.tensor.grad.numpy().astype(np.float32, copy=False)

    def latest(self, times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = np.zeros(self.pulled.ids.shape[0], dtype=np.float64)
        np.maximum.at(out, self.inverse, times)
        return out
