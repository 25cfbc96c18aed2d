"""`KafkaEventSource`: a Kafka consumer-group member that reads where its owner says.

Redis, not Kafka, holds the authoritative position: on every partition assignment the source
asks its owner (the training loop, which restores the trainer's checkpoint) for the offsets
committed with the rows and seeks each partition there (Kafka's guidance for sinks outside
Kafka). Offsets are also committed to Kafka asynchronously, only so that standard lag tools
see the group's progress.

With `reader_process` (the default), fetching and parsing records happens in a child
process on another core (`freshrec.stream.reader`): this process stays the group member,
pauses its partitions, and tells the reader where each one starts after every assignment;
runs read under an older assignment are dropped, so positions still come only from the
owner. A reader that dies is replaced, and the owner is asked again where every owned
partition resumes.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import BaseModel, ConfigDict, Field

from freshrec.errors import BrokerUnavailable, DependencyUnavailable
from freshrec.stream.base import EventSource, Message, Partition, PartitionOwner, SourceLag
from freshrec.stream.reader import ReaderConfig, Run, run_reader
from freshrec.stream.topics import RECONNECT_BACKOFF_MAX_MS

__all__ = ["KafkaEventSource", "KafkaSourceConfig"]

logger = logging.getLogger(__name__)

_READER_QUEUE_RUNS = 4
"""Fetches the reader may be ahead of training: enough to hide a fetch, bounded in memory."""


class KafkaSourceConfig(BaseModel):
    """Consumer knobs of a `KafkaEventSource`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_timeout_ms: int = Field(
        10_000,
        ge=6000,
        description="Kafka group session timeout: a silent member's partitions move after it.",
    )
    group_instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        description="Kafka static membership: a trainer restarted with the same id gets its "
        "partitions back at once, without waiting out the session timeout or a rebalance. One "
        "id per trainer process of the group (e.g. the pod name of a StatefulSet); none: a "
        "dynamic member. `freshrec stack` sets `trainer-0`.",
    )
    reader_process: bool = Field(
        True,
        description="Fetch and parse Kafka records in a child process (a second core); false "
        "keeps everything in one process.",
    )
    start_from_beginning: bool = Field(
        True, description="Partitions without stored offsets start at the earliest message."
    )


# While the member has no partitions (a rebalance), one poll waits this long for the group
# join and sync to complete: kafka-python abandons a join that a poll's timeout cuts short
# and starts another, and in a group of several members each new join restarts the
# rebalance for all of them, which then never settles.
JOIN_POLL_MS = 3000


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaEventSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._source._revoked(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._source._assigned(assigned)


class KafkaEventSource(EventSource):
    """Subscribes to one topic as a member of `group`; positions come from the owner."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        *,
        max_records: int,
        config: KafkaSourceConfig | None = None,
    ) -> None:
        """Create the consumer (and the reader process) and subscribe.

        Args:
            bootstrap: Kafka bootstrap servers.
            topic: the events topic.
            group: consumer group id.
            max_records: most records one fetch hands back (the owner's batch size).
            config: consumer knobs (defaults when None).
        """
        self.config = config or KafkaSourceConfig()
        self.topic = topic
        self._group = group
        self._bootstrap = bootstrap
        self._max_records = max_records
        self._owner: PartitionOwner | None = None
        self._buffer: deque[Message] = deque()
        self._last_timestamp_ms = 0
        self._ready = False
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.config.start_from_beginning else "latest",
            max_poll_records=max_records,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            client_id=f"{group}-trainer",
            session_timeout_ms=self.config.session_timeout_ms,
            # a topic created just before subscribing may be missing from the first metadata;
            # refresh often so its partitions are assigned within seconds, not minutes
            metadata_max_age_ms=5000,
            heartbeat_interval_ms=max(1000, self.config.session_timeout_ms // 4),
            group_instance_id=self.config.group_instance_id,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        )
        self.consumer.subscribe([topic], listener=_Listener(self))
        self._epoch = 0
        self._positions: dict[Partition, int | None] = {}  # where the reader was told to start
        self._received: dict[Partition, int] = {}  # next offset after the last run
        self._highwater: dict[Partition, int | None] = {}
        self._reader: Any = None
        self._closing = False
        self._unpositioned: list[TopicPartition] | None = None  # assigned, not yet positioned
        if self.config.reader_process:
            self._start_reader()

    def attach(self, owner: PartitionOwner) -> None:
        """Name the owner asked for positions on every assignment."""
        self._owner = owner

    def _owner_or_fail(self) -> PartitionOwner:
        if self._owner is None:
            raise RuntimeError("KafkaEventSource polled before attach(owner)")
        return self._owner

    # ----------------------------------------------------------------- reader process

    def _start_reader(self) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited threads or torch state
        receive, self._commands = context.Pipe(duplex=False)
        self._runs = context.Queue(maxsize=_READER_QUEUE_RUNS)
        reader_config = ReaderConfig(
            bootstrap=self._bootstrap,
            client_id=f"{self._group}-reader",
            max_records=self._max_records,
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

    def _assign_reader(self, positions: dict[Partition, int | None]) -> None:
        self._epoch += 1
        self._positions = dict(positions)
        self._received.clear()
        self._highwater.clear()
        if self._closing:
            return
        try:
            self._commands.send(("assign", self._epoch, positions))
        except OSError as exc:  # the reader died; the next poll starts a new one
            logger.warning("record reader unreachable: %s", exc)

    def _revive_reader(self) -> None:
        """Replace a reader that died; the owner says again where every partition resumes."""
        logger.warning("record reader exited (code %s); starting a new one", self._reader.exitcode)
        self._stop_reader()
        self._start_reader()
        self.reposition()

    def _stop_reader(self) -> None:
        with contextlib.suppress(OSError):  # the reader is gone already
            self._commands.send(("stop",))
        self._reader.join(timeout=5)
        if self._reader.is_alive():
            self._reader.terminate()
            self._reader.join(timeout=5)
        self._runs.close()
        self._commands.close()

    # ----------------------------------------------------------------- rebalance callbacks

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        # kafka-python swallows what a rebalance callback raises; a failed owner must not
        # leave the partitions readable from Kafka's own (older) committed offsets
        self._unpositioned = list(assigned)
        if assigned:
            self.consumer.pause(*assigned)
        self._ready = bool(assigned)
        try:
            self._position(assigned)
        except DependencyUnavailable as exc:
            logger.warning("assigned %s, positions unknown until: %s", assigned, exc.message)

    def _position(self, assigned: list[TopicPartition]) -> None:
        """Ask the owner where `assigned` resume and read them from there."""
        owned = [(tp.topic, tp.partition) for tp in assigned]
        stored = self._owner_or_fail().partitions_assigned(owned)
        self._buffer.clear()
        if self._reader is not None:
            self._assign_reader({key: stored.get(key) for key in owned})
        for tp in assigned if self._reader is None else ():
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)
            elif self.config.start_from_beginning:
                self.consumer.seek_to_beginning(tp)
        if assigned and self._reader is None:
            self.consumer.resume(*assigned)  # the reader fetches them otherwise: stay paused
        self._unpositioned = None
        logger.info("assigned %s; resuming from stored offsets", [str(tp) for tp in assigned])

    def reposition(self) -> None:
        """At the next poll, ask the owner where every owned partition resumes."""
        owned = list(self.consumer.assignment())
        if owned:
            self.consumer.pause(*owned)
        self._buffer.clear()
        self._unpositioned = owned

    def _revoked(self, revoked: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self._buffer = deque(m for m in self._buffer if (m.topic, m.partition) not in gone)
        if self._reader is not None and revoked:
            self._assign_reader({})  # until the next assignment says where to read
        if self._owner is not None:
            self._owner.partitions_revoked(sorted(gone))

    # ----------------------------------------------------------------- polling

    def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to `max_records` messages of owned partitions (see `EventSource.poll`)."""
        self._owner_or_fail()
        if self._reader is not None and not self._reader.is_alive():
            self._revive_reader()
        if self._unpositioned is not None:
            self._poll_group(0)  # a rebalance meanwhile replaces what is to be positioned
            if self._unpositioned is not None:
                self._position(self._unpositioned)  # raises while the owner's store is down
        if self._reader is None:
            return self._poll_consumer(max_records, timeout_s)
        deadline = time.monotonic() + timeout_s
        while not self._buffer:
            if not self.consumer.assignment():
                self._poll_group(JOIN_POLL_MS)
                if not self.consumer.assignment():
                    return []
            self._poll_group(0)
            try:
                epoch, runs, highwaters = self._runs.get(
                    timeout=max(deadline - time.monotonic(), 0.01)
                )
            except queue.Empty:
                return []
            if epoch != self._epoch:  # read under an assignment that has since changed
                if time.monotonic() >= deadline:
                    return []
                continue
            self._take_runs(runs)
            self._highwater.update(highwaters)
        n = min(max_records, len(self._buffer))
        return [self._buffer.popleft() for _ in range(n)]

    def _rebalancing(self) -> bool:
        """The member has to (re)join its group (kafka-python's coordinator says so)."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        return bool(coordinator is not None and coordinator.need_rejoin())

    def _poll_group(self, timeout_ms: int) -> None:
        """Group membership only: joins, rebalance callbacks; its partitions are paused."""
        if self._rebalancing():
            timeout_ms = max(timeout_ms, JOIN_POLL_MS)
        try:
            self.consumer.poll(timeout_ms=timeout_ms, max_records=1)
        except KafkaError as exc:
            raise BrokerUnavailable(f"polling {self.topic} failed: {exc}") from exc

    def _take_runs(self, runs: list[Run]) -> None:
        for topic, partition, offsets, values, keys, headers, last_timestamp_ms in runs:
            self._buffer.extend(
                Message(topic, partition, offset, value, key, header)
                for offset, value, key, header in zip(offsets, values, keys, headers, strict=True)
            )
            self._received[(topic, partition)] = offsets[-1] + 1
            self._last_timestamp_ms = max(self._last_timestamp_ms, last_timestamp_ms)

    def _poll_consumer(self, max_records: int, timeout_s: float) -> list[Message]:
        try:
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise BrokerUnavailable(f"polling {self.topic} failed: {exc}") from exc
        out: list[Message] = []
        for tp in sorted(polled, key=lambda t: t.partition):
            records = polled[tp]
            out.extend(
                Message(tp.topic, tp.partition, r.offset, r.value, r.key, tuple(r.headers or ()))
                for r in records
            )
            if records:
                self._last_timestamp_ms = max(self._last_timestamp_ms, records[-1].timestamp)
        return out

    # ----------------------------------------------------------------- progress

    def assignment(self) -> list[Partition]:
        """The partitions this member owns right now."""
        return sorted((tp.topic, tp.partition) for tp in self.consumer.assignment())

    def commit_async(self, offsets: Mapping[Partition, int]) -> None:
        """Commit `offsets` of owned partitions to Kafka, for lag tools; failures are logged."""
        owned = self.consumer.assignment()
        commits = {
            TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
            for (t, p), o in offsets.items()
            if TopicPartition(t, p) in owned
        }
        if commits:
            try:
                self.consumer.commit_async(commits)
            except KafkaError as exc:  # informational only; the owner holds the real position
                logger.debug("async Kafka commit failed: %s", exc)

    def lag(self) -> SourceLag:
        """Buffered messages plus what the broker holds beyond the fetch position."""
        lag = len(self._buffer)  # fetched but not yet handed out: still lag
        if self._reader is not None:
            for key, high in self._highwater.items():
                if high is not None:
                    lag += max(0, high - self._received.get(key, self._positions.get(key) or 0))
        for tp in self.consumer.assignment() if self._reader is None else ():
            high = self.consumer.highwater(tp)
            if high is not None:
                lag += max(0, high - self.consumer.position(tp))
        behind = lag > 0 and self._last_timestamp_ms > 0
        age = max(0.0, time.time() - self._last_timestamp_ms / 1000) if behind else 0.0
        return SourceLag(lag, age)

    def ready(self) -> bool:
        """True while the group has assigned this member a partition."""
        return self._ready

    def close(self) -> None:
        """Leave the group, close the consumer and stop the reader."""
        self._closing = True
        try:
            self.consumer.close(autocommit=False)  # the revocation still talks to the reader
        finally:
            if self._reader is not None:
                self._stop_reader()
