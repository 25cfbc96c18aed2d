"""The Kafka side of training: a consumer-group member that feeds `OnlineTrainer`.

Redis, not Kafka, holds the authoritative position: on every partition assignment the loop
restores the trainer's checkpoint and seeks each partition to the offset committed with the
rows (Kafka's guidance for sinks outside Kafka). Offsets are also committed to Kafka
asynchronously, only so that standard lag tools see the group's progress.

With `reader_process` (the default), fetching and parsing records happens in a child
process on another core (`freshrec.stream.reader`): this process stays the group member,
pauses its partitions, and tells the reader where each one starts after every assignment;
runs read under an older assignment are dropped, so positions still come only from Redis.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import Gauge

from freshrec.errors import BrokerUnavailable
from freshrec.stream.reader import ReaderConfig, Run, run_reader
from freshrec.training.trainer import BatchReport, Message, OnlineTrainer

__all__ = ["LoopConfig", "TrainingLoop"]

logger = logging.getLogger(__name__)

LAG_MESSAGES = Gauge(
    "freshrec_trainer_consumer_lag_messages", "Messages in the topic not yet consumed."
)
LAG_SECONDS = Gauge(
    "freshrec_trainer_consumer_lag_seconds",
    "Age of the last consumed message when more are waiting; 0 when caught up.",
)
ASSIGNED = Gauge("freshrec_trainer_assigned_partitions", "Partitions assigned to this member.")


@dataclass(frozen=True)
class LoopConfig:
    """Consumer knobs.

    Attributes:
        bootstrap: Kafka bootstrap servers.
        topic: the events topic.
        batch_size: messages per micro-batch (also `max_poll_records`).
        max_wait_s: a partial batch is trained after waiting this long for more messages.
        start_from_beginning: where a partition without a stored offset starts.
        session_timeout_ms: how long the group waits for a silent member (a crashed
            trainer's partitions move after this).
        reader_process: fetch and parse records in a child process (another core).
    """

    bootstrap: str
    topic: str
    batch_size: int = 1024
    max_wait_s: float = 0.1
    start_from_beginning: bool = True
    session_timeout_ms: int = 10_000
    reader_process: bool = True


_READER_QUEUE_RUNS = 4
"""Fetches the reader may be ahead of training: enough to hide a fetch, bounded in memory."""


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: TrainingLoop) -> None:
        self._loop = loop

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._loop.drop_buffered(set(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._loop.seek_to_stored(assigned)


class TrainingLoop:
    """Polls micro-batches and hands them to the trainer until stopped."""

    def __init__(self, trainer: OnlineTrainer, config: LoopConfig) -> None:
        self.trainer = trainer
        self.config = config
        self._buffer: deque[Message] = deque()
        self._last_timestamp_ms = 0
        self.consumer = KafkaConsumer(
            bootstrap_servers=config.bootstrap,
            group_id=trainer.config.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if config.start_from_beginning else "latest",
            max_poll_records=config.batch_size,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id=f"{trainer.config.group}-trainer",
            session_timeout_ms=config.session_timeout_ms,
            # a topic created just before subscribing may be missing from the first metadata;
            # refresh often so its partitions are assigned within seconds, not minutes
            metadata_max_age_ms=5000,
            heartbeat_interval_ms=max(1000, config.session_timeout_ms // 4),
        )
        self.consumer.subscribe([config.topic], listener=_SeekToStored(self))
        self.ready = threading.Event()
        self._epoch = 0
        self._received: dict[tuple[str, int], int] = {}  # next offset after the last run
        self._highwater: dict[tuple[str, int], int] = {}
        self._reader: Any = None
        self._closing = False
        if config.reader_process:
            self._start_reader()

    def _start_reader(self) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited threads or torch state
        receive, self._commands = context.Pipe(duplex=False)
        self._runs = context.Queue(maxsize=_READER_QUEUE_RUNS)
        reader_config = ReaderConfig(
            bootstrap=self.config.bootstrap,
            client_id=f"{self.trainer.config.group}-reader",
            max_records=self.config.batch_size,
            start_from_beginning=self.config.start_from_beginning,
        )
        self._reader = context.Process(
            target=run_reader,
            args=(reader_config, receive, self._runs, os.getpid()),
            name="freshrec-trainer-reader",
            daemon=True,
        )
        self._reader.start()
        receive.close()

    def _assign_reader(self, positions: dict[tuple[str, int], int | None]) -> None:
        self._epoch += 1
        self._received.clear()
        self._highwater.clear()
        if self._closing:
            return
        try:
            self._commands.send(("assign", self._epoch, positions))
        except OSError as exc:  # the reader died; the next fill starts a new one
            logger.warning("record reader unreachable: %s", exc)

    def _revive_reader(self) -> None:
        """Replace a reader that died, resuming every owned partition at its committed offset."""
        logger.warning("record reader exited (code %s); starting a new one", self._reader.exitcode)
        self._stop_reader()
        self._start_reader()
        self._buffer.clear()
        self._assign_reader(
            {
                (tp.topic, tp.partition): self.trainer.offsets.get((tp.topic, tp.partition))
                for tp in self.consumer.assignment()
            }
        )

    def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        """Restore the checkpoint and seek `assigned` partitions to the stored offsets."""
        offsets = self.trainer.restore()
        self._buffer.clear()
        if self._reader is not None:
            if assigned:
                self.consumer.pause(*assigned)  # the reader fetches them
            self._assign_reader(
                {(t.topic, t.partition): offsets.get((t.topic, t.partition)) for t in assigned}
            )
        for tp in assigned if self._reader is None else ():
            stored = offsets.get((tp.topic, tp.partition))
            if stored is not None:
                self.consumer.seek(tp, stored)
            elif self.config.start_from_beginning:
                self.consumer.seek_to_beginning(tp)
        ASSIGNED.set(len(assigned))
        logger.info("assigned %s; resuming from stored offsets", [str(tp) for tp in assigned])
        if assigned:
            self.ready.set()
        else:
            self.ready.clear()

    def drop_buffered(self, revoked: set[TopicPartition]) -> None:
        """Forget buffered messages of partitions this member no longer owns."""
        keep = [m for m in self._buffer if TopicPartition(m.topic, m.partition) not in revoked]
        self._buffer = deque(keep)
        if self._reader is not None and revoked:
            self._assign_reader({})  # until the next assignment says where to read

    def _poll_group(self, timeout_ms: int) -> None:
        """Group membership only: joins, rebalance callbacks; its partitions are paused."""
        try:
            self.consumer.poll(timeout_ms=timeout_ms, max_records=1)
        except KafkaError as exc:
            raise BrokerUnavailable(f"polling {self.config.topic} failed: {exc}") from exc

    def _fill_from_reader(self, deadline: float, stop: threading.Event) -> None:
        if not self._reader.is_alive():
            self._revive_reader()
        while len(self._buffer) < self.config.batch_size and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self._buffer:
                return
            if not self.consumer.assignment():
                self._poll_group(200)
                if not self.consumer.assignment():
                    return
            self._poll_group(0)
            try:
                epoch, runs, highwaters = self._runs.get(
                    timeout=max(remaining, 0.05) if self._buffer else 0.2
                )
            except queue.Empty:
                if not self._buffer:
                    return
                continue
            if epoch != self._epoch:
                continue  # read under an assignment that has since changed
            self._take_runs(runs)
            self._highwater.update(highwaters)

    def _take_runs(self, runs: list[Run]) -> None:
        for topic, partition, offsets, values, last_timestamp_ms in runs:
            self._buffer.extend(
                Message(topic, partition, offset, value)
                for offset, value in zip(offsets, values, strict=True)
            )
            self._received[(topic, partition)] = offsets[-1] + 1
            self._last_timestamp_ms = max(self._last_timestamp_ms, last_timestamp_ms)

    def _fill(self, deadline: float, stop: threading.Event) -> None:
        if self._reader is not None:
            self._fill_from_reader(deadline, stop)
            return
        while len(self._buffer) < self.config.batch_size and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self._buffer:
                return
            timeout_ms = int(max(remaining, 0.05) * 1000) if self._buffer else 200
            try:
                polled = self.consumer.poll(
                    timeout_ms=timeout_ms, max_records=self.config.batch_size
                )
            except KafkaError as exc:
                raise BrokerUnavailable(f"polling {self.config.topic} failed: {exc}") from exc
            for tp in sorted(polled, key=lambda t: t.partition):
                records = polled[tp]
                topic, partition = tp.topic, tp.partition
                self._buffer.extend(Message(topic, partition, r.offset, r.value) for r in records)
                if records:
                    self._last_timestamp_ms = max(self._last_timestamp_ms, records[-1].timestamp)
            if not polled and not self._buffer:
                return

    def _update_lag(self) -> None:
        # position() counts what was fetched into the buffer; buffered messages are still lag
        lag = len(self._buffer)
        if self._reader is not None:
            for key, high in self._highwater.items():
                if high is not None:
                    next_offset = self._received.get(key, self.trainer.offsets.get(key, 0))
                    lag += max(0, high - next_offset)
        for tp in self.consumer.assignment() if self._reader is None else ():
            high = self.consumer.highwater(tp)
            if high is not None:
                lag += max(0, high - self.consumer.position(tp))
        LAG_MESSAGES.set(lag)
        behind = lag > 0 and self._last_timestamp_ms > 0
        LAG_SECONDS.set(max(0.0, time.time() - self._last_timestamp_ms / 1000) if behind else 0.0)

    def step(self, stop: threading.Event) -> BatchReport | None:
        """Collect one micro-batch, train and commit it; None when nothing arrived."""
        self._fill(time.monotonic() + self.config.max_wait_s, stop)
        if not self._buffer:
            self._update_lag()
            self.trainer.publish_pending()  # an idle trainer still publishes its last updates
            return None
        n = min(self.config.batch_size, len(self._buffer))
        batch = [self._buffer.popleft() for _ in range(n)]
        report = self.trainer.train_batch(batch)
        self._update_lag()
        self._commit_to_kafka()
        return report

    def _commit_to_kafka(self) -> None:
        offsets = {
            TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
            for (t, p), o in self.trainer.offsets.items()
            if TopicPartition(t, p) in self.consumer.assignment()
        }
        if offsets:
            try:
                self.consumer.commit_async(offsets)
            except KafkaError as exc:  # informational only; Redis holds the real position
                logger.debug("async Kafka commit failed: %s", exc)

    def run(self, stop: threading.Event) -> None:
        """Train until `stop` is set; the batch in progress is finished and committed."""
        while not stop.is_set():
            self.step(stop)
        logger.info("training loop stopped: %s", self.trainer.state_summary())

    def close(self) -> None:
        """Leave the group, close the consumer and stop the reader."""
        self._closing = True
        try:
            self.consumer.close(autocommit=False)  # the revocation still talks to the reader
        finally:
            if self._reader is not None:
                self._stop_reader()

    def _stop_reader(self) -> None:
        with contextlib.suppress(OSError):  # the reader is gone already
            self._commands.send(("stop",))
        self._reader.join(timeout=5)
        if self._reader.is_alive():
            self._reader.terminate()
            self._reader.join(timeout=5)
        self._runs.close()
        self._commands.close()
