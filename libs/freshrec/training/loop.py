"""The training loop: micro-batches from an `EventSource` into `OnlineTrainer`.

The loop is the batching policy only: it fills a micro-batch up to `batch_size` messages or
until `max_wait_s` passed, trains and commits it through the trainer (rows, offsets and
checkpoint in one transaction), reports the committed offsets back to the source for lag
tools, and publishes pending dense updates when idle.

It is also the source's `PartitionOwner`: on every assignment it restores the trainer's
checkpoint and hands back the offsets committed with the rows, so the source reads each
partition from exactly there; a batch collected but not yet committed is dropped on every
rebalance (everything in it is read again, or belongs to another member now).

A dependency that stops answering (`StoreUnavailable` for Redis, `BrokerUnavailable` for
Kafka) pauses training instead of ending it: the batch in hand is dropped, the loop retries
with a backoff from `RETRY_FIRST_S` doubling to `RETRY_MAX_S`, and the source is repositioned,
so the trainer restores its checkpoint from the store and every partition is read again from
the offsets committed with the rows. Nothing uncommitted survives an outage, so nothing is
applied twice; nothing committed is lost. `outage` says what training waits for (readiness),
and `freshrec_trainer_dependency_up` / `freshrec_trainer_outages_total` count it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from prometheus_client import Counter, Gauge

from freshrec.errors import DependencyUnavailable, StoreUnavailable
from freshrec.stream.base import EventSource, Message, Partition
from freshrec.training.trainer import BatchReport, OnlineTrainer

__all__ = ["RETRY_FIRST_S", "RETRY_MAX_S", "TrainingLoop"]

logger = logging.getLogger(__name__)

LAG_MESSAGES = Gauge(
    "freshrec_trainer_consumer_lag_messages", "Messages in the topic not yet consumed."
)
LAG_SECONDS = Gauge(
    "freshrec_trainer_consumer_lag_seconds",
    "Age of the last consumed message when more are waiting; 0 when caught up.",
)
ASSIGNED = Gauge("freshrec_trainer_assigned_partitions", "Partitions assigned to this member.")
DEPENDENCY_UP = Gauge(
    "freshrec_trainer_dependency_up",
    "0 while training is paused because the dependency does not answer, else 1.",
    ["dependency"],
)
OUTAGES = Counter(
    "freshrec_trainer_outages_total",
    "Times training paused because a dependency stopped answering.",
    ["dependency"],
)
for _dependency in ("redis", "kafka"):
    DEPENDENCY_UP.labels(_dependency).set(1)
    OUTAGES.labels(_dependency)

RETRY_FIRST_S = 0.2
"""First wait before training is tried again after a dependency failed."""
RETRY_MAX_S = 5.0
"""Longest wait between tries during an outage (training resumes within this of a return)."""

_IDLE_POLL_S = 0.2
"""Longest wait of one poll (bounds how late a stop is seen)."""

_MIN_POLL_S = 0.05
"""Shortest wait of a poll that tops up a partial batch."""


class TrainingLoop:
    """Collects micro-batches from `source` and trains them until stopped."""

    def __init__(
        self, trainer: OnlineTrainer, source: EventSource, *, batch_size: int, max_wait_s: float
    ) -> None:
        """Create the loop and make it the owner of `source`'s partitions.

        Args:
            trainer: trains and commits each batch; its committed offsets are the positions.
            source: the consumer-group member the messages come from.
            batch_size: messages per micro-batch, at most.
            max_wait_s: a partial batch is trained after waiting this long for more.
        """
        if batch_size < 1 or max_wait_s <= 0:
            raise ValueError("batch_size must be >= 1 and max_wait_s > 0")
        self.trainer = trainer
        self.source = source
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._batch: list[Message] = []
        self.outage: str | None = None
        self._outage_since = 0.0
        source.attach(self)

    # ----------------------------------------------------------------- PartitionOwner

    def partitions_assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Restore the checkpoint; the source resumes at the offsets stored with the rows."""
        offsets = self.trainer.restore(partitions)
        self._batch.clear()
        ASSIGNED.set(len(partitions))
        return {key: offsets[key] for key in partitions if key in offsets}

    def partitions_revoked(self, partitions: Sequence[Partition]) -> None:
        """Forget collected messages of partitions this member no longer owns."""
        gone = set(partitions)
        self._batch = [m for m in self._batch if (m.topic, m.partition) not in gone]

    # ----------------------------------------------------------------- batching

    def _fill(self, stop: threading.Event) -> None:
        deadline = time.monotonic() + self.max_wait_s
        while len(self._batch) < self.batch_size and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self._batch:
                return
            # never longer than an idle poll, however long max_wait_s: a stop is seen promptly
            timeout = (
                min(max(remaining, _MIN_POLL_S), _IDLE_POLL_S) if self._batch else _IDLE_POLL_S
            )
            polled = self.source.poll(self.batch_size - len(self._batch), timeout)
            self._batch.extend(polled)
            if not polled and not self._batch:
                return

    def _update_lag(self) -> None:
        lag = self.source.lag()
        LAG_MESSAGES.set(lag.messages + len(self._batch))
        LAG_SECONDS.set(lag.seconds)

    def step(self, stop: threading.Event) -> BatchReport | None:
        """Collect one micro-batch, train and commit it; None when nothing arrived."""
        self._fill(stop)
        if not self._batch:
            self._update_lag()
            self.trainer.publish_pending()  # an idle trainer still publishes its last updates
            return None
        batch, self._batch = self._batch, []
        report = self.trainer.train_batch(batch)
        self._update_lag()
        self.source.commit_async(self.trainer.offsets)
        return report

    def run(self, stop: threading.Event) -> None:
        """Train until `stop` is set; the batch in progress is finished and committed.

        Rides through dependency outages (see the module docstring); never returns early.
        """
        wait_s = RETRY_FIRST_S
        while not stop.is_set():
            try:
                self.step(stop)
            except DependencyUnavailable as exc:
                self._pause(exc)
                stop.wait(wait_s)
                wait_s = min(wait_s * 2, RETRY_MAX_S)
                continue
            if self.outage is not None:
                self._resume()
            wait_s = RETRY_FIRST_S
        logger.info("training loop stopped: %s", self.trainer.state_summary())

    def _pause(self, exc: DependencyUnavailable) -> None:
        dependency = "redis" if isinstance(exc, StoreUnavailable) else "kafka"
        if self.outage is None:
            self._outage_since = time.monotonic()
            OUTAGES.labels(dependency).inc()
            logger.warning("training paused, %s does not answer: %s", dependency, exc.message)
        DEPENDENCY_UP.labels(dependency).set(0)
        self.outage = f"{dependency}: {exc.message}"
        self._batch.clear()
        self.source.reposition()  # what was read since the last commit is read again

    def _resume(self) -> None:
        paused = time.monotonic() - self._outage_since
        logger.info("training resumed after %.1f s (%s)", paused, self.outage)
        for dependency in ("redis", "kafka"):
            DEPENDENCY_UP.labels(dependency).set(1)
        self.outage = None
