"""The online trainer: micro-batches of consumed messages in, rows and offsets out, atomically.

One `train_batch` call:

1. decodes the messages (poison ones go to the dead-letter sink with their reason);
2. turns events into examples (`ExampleBuilder`: joins, windows, negatives);
3. pulls the batch's user, item and context rows (plus `retrieval_negatives` items drawn
   from the recently seen ones), runs forward/backward in PyTorch — the ranking head's
   logistic loss on preference labels plus `retrieval_weight` times the retrieval head's
   sampled softmax over interactions with logQ correction (`ItemFrequency`) — steps the
   dense optimizer, and stages the new rows with each table's own optimizer;
4. stages, in the **same** Redis transaction, the consumer's next offsets and the trainer
   checkpoint (dense parameters, dense optimizer state, example-builder state, the
   item-frequency estimate's changed buckets and step), and every `publish_interval_s` the
   serving copy of the dense parameters; then commits.

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
import torch

from freshrec.errors import ConfigError
from freshrec.models.features import context_row_ids, entity_row_ids, mean_pool
from freshrec.models.model import (
    MODEL_FORMAT,
    RankingModel,
)
from freshrec.models.published import (
    ITEM_NAMES_KEY,
    PUBLISHED_MODEL_KEY,
    PUBLISHED_VERSION_KEY,
)
from freshrec.models.serialization import decode_tensors, encode_tensors
from freshrec.stream.base import Message
from freshrec.stream.events import PoisonMessage
from freshrec.stream.messages import ConsumedEvent, read_event
from freshrec.table.base import Atomicity, Transaction
from freshrec.table.tables import Tables
from freshrec.threads import limit_compute_threads
from freshrec.training.auc import StreamingAuc
from freshrec.training.config import TrainerConfig
from freshrec.training.dedup import DedupWindow
from freshrec.training.examples import Example, ExampleBuilder
from freshrec.training.frequency import ItemFrequency
from freshrec.training.keys import checkpoint_key, frequency_key, replay_key
from freshrec.training.leaf import Leaf
from freshrec.training.members import DenseSharing, published_version
from freshrec.training.metrics import (
    AUC,
    BATCHES,
    COMMIT_SECONDS,
    DEAD_LETTERS,
    DENSE_VERSION,
    DUPLICATES,
    EVENTS_CONSUMED,
    EXAMPLES,
    FRESHNESS,
    LOSS,
    MEMBERS_AVERAGED,
    ROWS_CREATED,
    ROWS_EXPIRED,
    ROWS_FILTERED,
    ROWS_WRITTEN,
    TABLE_BYTES,
    TABLE_ROWS,
    WATERMARK,
    BatchLaps,
)
from freshrec.training.replay import InteractionReplay
from freshrec.training.softmax import retrieval_loss, sample_negatives

__all__ = [
    "BatchReport",
    "DeadLetterSink",
    "Message",
    "OnlineTrainer",
    "TrainerConfig",
    "checkpoint_key",
    "frequency_key",
    "replay_key",
]

logger = logging.getLogger(__name__)

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
        self.frequency = self._new_frequency()
        self.replay = InteractionReplay(
            config.replay_capacity, replay_key(config.group, config.member)
        )
        # a sharded backend commits the deployment-wide keys (published model, item names)
        # in their own shard, after the batch
        self._split_global = self._meta.atomicity is Atomicity.GROUP
        self._sharing = DenseSharing(config.member)

    def _new_frequency(self) -> ItemFrequency:
        return ItemFrequency(
            self.config.frequency_buckets,
            self.config.frequency_alpha,
            frequency_key(self.config.group, self.config.member),
        )

    # ----------------------------------------------------------------- checkpoint

    def restore(
        self, partitions: Sequence[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], int]:
        """Load the committed checkpoint and offsets (fresh state when there is none).

        Args:
            partitions: the partitions this trainer now owns; a member of several
                (`TrainerOptions.member`) keeps and fences only these. None: all stored.

        Returns:
            The next offset to consume per (topic, partition).
        """
        config_group = self.config.group
        # a commit cut short (crash, outage mid-commit) is completed before its offsets count
        self._meta.recover(config_group)
        raw = self._meta.get_hash(self._offsets_key, group=config_group)
        owned = None if partitions is None or not self.config.member else set(partitions)
        self.offsets = {}
        for name, value in raw.items():
            topic, _, partition = (name.decode() if isinstance(name, bytes) else name).rpartition(
                ":"
            )
            if owned is None or (topic, int(partition)) in owned:
                self.offsets[(topic, int(partition))] = int(value)
        self.dedup = DedupWindow(self.config.dedup_window, f"dedup:{config_group}")
        for (source, number), next_offset in self.offsets.items():
            ring = self._meta.get_blob(self.dedup.ring_key(source, number), group=config_group)
            self.dedup.load(source, number, ring, next_offset)
        blob = self._meta.get_blob(
            checkpoint_key(config_group, self.config.member), group=config_group
        )
        if blob is None:
            self._fresh_state()
        else:
            tensors, meta = decode_tensors(blob)
            found = int(meta.get("model_format", 1))
            if found != MODEL_FORMAT:
                raise ConfigError(
                    f"the checkpoint of group {config_group!r} holds a dense model of format "
                    f"{found}, this trainer trains format {MODEL_FORMAT}: train into a new "
                    "consumer group (FRESHREC_TRAINER__GROUP) or namespace"
                )
            self._load_dense(tensors)
            self.builder.load_state(bytes.fromhex(meta["builder"]))
            self.batches = int(meta["batches"])
            self.published_version = int(meta["published_version"])
            self.frequency = self._new_frequency()
            self.frequency.load(
                self._meta.get_blob(self.frequency.key, group=config_group),
                int(meta.get("frequency_step", 0)),
            )
            self.replay = InteractionReplay(self.config.replay_capacity, self.replay.key)
            self.replay.load(
                self._meta.get_blob(self.replay.key, group=config_group),
                int(meta.get("replay_count", 0)),
            )
            logger.info(
                "restored checkpoint: %d batches, %d partitions", self.batches, len(self.offsets)
            )
        if self.config.member:
            self._sharing.reset(self.model, self._meta)
        return dict(self.offsets)

    def _fresh_state(self) -> None:
        """The state before any batch: what a restore finds when nothing was committed yet
        (also undoes a batch that failed to commit before the first checkpoint)."""
        self.model = RankingModel(self.config.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.dense_lr)
        self.builder = ExampleBuilder(self.config.examples)
        self.frequency = self._new_frequency()
        self.replay = InteractionReplay(self.config.replay_capacity, self.replay.key)
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
        laps = BatchLaps()
        if self.batches % self.config.expire_every_batches == 0 and self.builder.watermark > 0:
            self._expire(self.builder.watermark)
        laps.lap("expire")
        events, accepted, dead = self._decode(messages)
        examples = self.builder.add(events, accepted)
        laps.lap("decode")
        WATERMARK.set(self.builder.watermark)
        EVENTS_CONSUMED.inc(len(messages))
        EXAMPLES.inc(len(examples))

        # `self.offsets` (what the status page reports) moves only once the batch committed
        offsets = dict(self.offsets)
        for message in messages:
            offsets[(message.topic, message.partition)] = message.offset + 1
        moved = {key for key in offsets if offsets[key] != self.offsets.get(key)}
        self.batches += 1
        member = self.config.member or None
        glob = self._meta.transaction() if self._split_global else None
        with self._meta.transaction(group=self.config.group, writer=member) as txn:
            shared = glob if glob is not None else txn
            salt = f"{messages[0].topic}:{messages[0].partition}:{messages[0].offset}"
            loss, written = (
                self._step(examples, salt, txn, shared, laps) if examples else (float("nan"), 0)
            )
            if member is not None:
                # another member that took these partitions over has moved them on: refuse
                txn.expect_hash(
                    self._offsets_key, {f"{t}:{p}": self.offsets.get((t, p)) for t, p in moved}
                )
            txn.put_hash(self._offsets_key, {f"{t}:{p}": offsets[(t, p)] for t, p in moved})
            writes = (
                *self.dedup.drain_writes(),
                *self.frequency.drain_writes(),
                *self.replay.drain_writes(),
            )
            for write in writes:
                txn.put_blob_range(write.key, write.start, write.data)
            self._stage_checkpoint(txn)
            if examples:
                self._unpublished = True
            self._publish_if_due(txn, shared)
            laps.lap("push")
        if glob is not None:
            glob.commit()
        laps.lap("commit")
        self.offsets = offsets
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

    def _step(
        self,
        examples: list[Example],
        salt: str,
        txn: Transaction,
        shared: Transaction,
        laps: BatchLaps,
    ) -> tuple[float, int]:
        n = len(examples)
        replay_users, replay_items = self.replay.sample(self.config.replay_samples, salt)
        replayed = replay_users.shape[0]
        users = np.concatenate(
            [entity_row_ids("user", [e.user_id for e in examples]), replay_users]
        )
        negatives = sample_negatives(
            self.builder.recent_items(), self.config.retrieval_negatives, salt
        )
        items = np.concatenate(
            [
                entity_row_ids("item", [e.item_id for e in examples]),
                replay_items,
                entity_row_ids("item", negatives),
            ]
        )
        ctx_ids, ctx_rows = context_row_ids([e.context for e in examples])
        laps.lap("features")

        # replayed and sampled rows get gradients but are no occurrence
        u = Leaf.pull(self.tables.user, users, counted=n)
        # (the admission filter counts what users did, not what the trainer drew)
        i = Leaf.pull(self.tables.item, items, counted=n)
        c = Leaf.pull(self.tables.context, ctx_ids)
        laps.lap("pull")

        context = mean_pool(c.gathered(), ctx_rows, n, self.config.model.context_dim)

        labels = torch.tensor([e.label for e in examples], dtype=torch.float32)
        user_rows = u.gathered()
        ranking, _ = self.model(user_rows[:n], i.gathered()[:n], context)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        # a sum, not a batch mean: each row's gradient must not shrink as batches grow (the
        # per-row Adagrad/SGD steps are not scale-free); Adam on the dense part is
        loss_rank = bce(ranking, labels, reduction="sum")
        total = loss_rank
        fresh = [x for x, e in enumerate(examples) if e.interaction]
        self.replay.add(users[fresh], items[fresh])  # drawn from the next batch on
        # a replayed pair whose rows expired (or were never admitted) is not replayed
        drawn = np.arange(n, n + replayed)
        alive = u.pulled.exists[u.inverse[drawn]] & i.pulled.exists[i.inverse[drawn]]
        positives = [*fresh, *drawn[alive].tolist()]
        if positives and self.config.retrieval_weight > 0:
            loss_retr = retrieval_loss(
                self.frequency,
                positives,
                fresh=len(fresh),
                users=users,
                items=items,
                user_rows=user_rows,
                item_leaf=i,
                negatives=len(negatives),
                pool=len(self.builder.recent_items()),
            )
            total = total + self.config.retrieval_weight * loss_retr
        elif fresh:
            self.frequency.update(items[fresh])
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()

        with torch.no_grad():
            probs = torch.sigmoid(ranking + self.config.examples.logit_offset).numpy()
        self.auc.update(probs.astype(np.float64), labels.numpy().astype(np.float64))
        laps.lap("model")

        names: list[str | None] = [e.item_id for e in examples]
        names += [None] * replayed
        names += negatives
        self._stage_item_names(i, names, shared)
        times = np.array([e.event_time for e in examples], dtype=np.float64)
        latest = float(times.max())
        item_times = np.concatenate([times, np.full(replayed + len(negatives), latest)])
        user_times = np.concatenate([times, np.full(replayed, latest)])
        written = 0
        for store, leaf, rows_times in (
            (self.tables.user, u, user_times),
            (self.tables.item, i, item_times),
            (self.tables.context, c, times[ctx_rows]),
        ):
            if leaf.pulled.ids.shape[0] == 0:
                continue
            name = store.config.name
            # rows only drawn (replayed, sampled negatives) are updated where they exist but
            # neither created nor kept from expiring: their event time stays what it was
            keep = np.flatnonzero(leaf.pulled.exists | (leaf.occurrences > 0))
            row_times = np.where(
                leaf.occurrences > 0, leaf.latest(rows_times), leaf.pulled.event_time
            )
            result = store.push(
                leaf.pulled.take(keep, leaf.pulled.ids[keep]),
                leaf.grad()[keep],
                leaf.occurrences[keep],
                row_times[keep],
                txn,
            )
            written += int(result.written.shape[0])
            ROWS_WRITTEN.labels(name).inc(int(result.written.shape[0]))
            ROWS_CREATED.labels(name).inc(result.created)
            ROWS_FILTERED.labels(name).inc(result.filtered)
        return float(loss_rank.item()) / n, written

    @staticmethod
    def _stage_item_names(leaf: Leaf, names: list[str | None], txn: Transaction) -> None:
        """Remember raw item ids of new rows so the ranker can answer with them (a replayed
        row is named already, unless it expired: then it keeps its numeric id)."""
        new = ~leaf.pulled.exists
        if not new.any():
            return
        _, first = np.unique(leaf.inverse, return_index=True)  # first mention of each row
        named = {str(int(leaf.pulled.ids[u])): names[int(first[u])] for u in np.flatnonzero(new)}
        fields = {k: v for k, v in named.items() if v is not None}
        if fields:
            txn.put_hash(ITEM_NAMES_KEY, fields)

    def _publish_if_due(self, txn: Transaction, shared: Transaction, force: bool = False) -> bool:
        """Stage a publish (into `shared`) when one is due (or forced while updates are
        unpublished); the checkpoint goes in `txn`."""
        now = self._clock()
        early = now - self._last_publish < self.config.publish_interval_s
        if not self._unpublished or (early and not force):
            return False
        self._stage_publish(shared)
        self._last_publish = now
        self._unpublished = False
        return True

    def publish_pending(self, *, force: bool = False) -> bool:
        """Publish updates the last batches made but no publish carried yet (when idle).

        Args:
            force: publish now even if the publish interval has not passed.

        Returns:
            True when a new version was published.
        """
        if not self._unpublished:
            return False
        glob = self._meta.transaction() if self._split_global else None
        with self._meta.transaction(
            group=self.config.group, writer=self.config.member or None
        ) as txn:
            published = self._publish_if_due(txn, glob if glob is not None else txn, force)
            if published:  # the checkpoint carries the published version counter
                self._stage_checkpoint(txn)
        if glob is not None:
            glob.commit()
        return published

    def _stage_checkpoint(self, txn: Transaction) -> None:
        meta = {
            "batches": self.batches,
            "published_version": self.published_version,
            "builder": self.builder.state().hex(),
            "frequency_step": self.frequency.step,
            "replay_count": self.replay.count,
            "model_format": MODEL_FORMAT,
        }
        txn.put_blob(
            checkpoint_key(self.config.group, self.config.member),
            encode_tensors(self._dense_tensors(), meta),
        )

    def _stage_publish(self, txn: Transaction) -> None:
        if self.config.member:
            MEMBERS_AVERAGED.set(self._sharing.sync(self.model, self._meta))
            self.published_version = max(self.published_version, published_version(self._meta))
            self._sharing.stage(txn, self._clock())
        self.published_version += 1
        meta = {
            "version": self.published_version,
            "published_at": self._clock(),
            "model": vars(self.config.model),
            "model_format": MODEL_FORMAT,
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
