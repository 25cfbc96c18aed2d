"""A child process that fetches and parses Kafka records for a consumer in another process.

Parsing Kafka's record batches in Python (varints, per-record objects) costs about as much
CPU per event as training on it. This process does that on a second core: the parent stays
the consumer-group member (it owns the partitions, pauses them so its own consumer fetches
nothing, and decides where each partition starts); the reader reads exactly the partitions
and positions it is told, and hands back plain `(offsets, values)` runs.

Protocol: the parent sends `("assign", epoch, {(topic, partition): offset | None})` (None:
start from the beginning or the end, per `start_from_beginning`) and finally `("stop",)`.
Every run the reader sends is tagged with the epoch of the assignment it was read under, so
the parent drops runs fetched before its latest assignment; positions therefore only ever
come from the parent, which takes them from the table's committed offsets.

The reader ignores SIGINT and SIGTERM (the parent ends it), and exits by itself when its
parent is gone.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from freshrec.stream.topics import RECONNECT_BACKOFF_MAX_MS

__all__ = ["Headers", "ReaderConfig", "Run", "run_reader"]

logger = logging.getLogger(__name__)

Headers = tuple[tuple[str, bytes], ...]
Run = tuple[str, int, list[int], list[bytes | None], list[bytes | None], list[Headers], int]
"""One partition's records of one fetch: topic, partition, offsets, values, keys, headers,
last timestamp (ms)."""


@dataclass(frozen=True)
class ReaderConfig:
    """What the reader process needs to know.

    Attributes:
        bootstrap: Kafka bootstrap servers.
        client_id: the reader's Kafka client id.
        max_records: records per fetch handed back at once.
        start_from_beginning: where a partition without a given offset starts.
    """

    bootstrap: str
    client_id: str
    max_records: int
    start_from_beginning: bool = True


def _assign(
    consumer: KafkaConsumer, positions: dict[tuple[str, int], int | None], earliest: bool
) -> list[TopicPartition]:
    partitions = [TopicPartition(t, p) for t, p in positions]
    consumer.assign(partitions)
    for tp in partitions:
        offset = positions[(tp.topic, tp.partition)]
        if offset is not None:
            consumer.seek(tp, offset)
        elif earliest:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek_to_end(tp)
    return partitions


def run_reader(config: ReaderConfig, commands: Connection, out: Any, parent_pid: int) -> None:
    """Reader process body: follow the parent's assignments until told to stop or orphaned.

    Args:
        config: consumer knobs.
        commands: receives `assign` and `stop` messages from the parent.
        out: a bounded multiprocessing queue; receives `(epoch, [Run, ...], highwaters)`.
        parent_pid: the parent's pid; the reader exits when its parent is gone.
    """
    # the parent decides when the reader ends: a Ctrl-C or a SIGTERM sent to the whole process
    # group must let the parent finish its batch and stop the reader itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    consumer = KafkaConsumer(
        bootstrap_servers=config.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id=config.client_id,
        max_poll_records=config.max_records,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
    )
    epoch = -1
    partitions: list[TopicPartition] = []
    try:
        while os.getppid() == parent_pid:
            while commands.poll(0 if partitions else 0.2):
                command = commands.recv()
                if command[0] == "stop":
                    return
                _, epoch, positions = command
                partitions = _assign(consumer, positions, config.start_from_beginning)
            if not partitions:
                continue
            polled = consumer.poll(timeout_ms=100, max_records=config.max_records)
            if not polled:
                continue
            runs: list[Run] = [
                (tp.topic, tp.partition, [r.offset for r in records], [r.value for r in records],
                 [r.key for r in records], [tuple(r.headers or ()) for r in records],
                 records[-1].timestamp)
                for tp, records in polled.items()
                if records
            ]  # fmt: skip
            highwaters = {(tp.topic, tp.partition): consumer.highwater(tp) for tp in partitions}
            _hand_over(out, (epoch, runs, highwaters), commands, parent_pid)
    finally:
        out.cancel_join_thread()  # runs still queued are read again after any restart
        consumer.close()


def _hand_over(out: Any, item: object, commands: Connection, parent_pid: int) -> None:
    """Put `item` on the bounded queue; give it up when a command (a new assignment, which
    re-reads from the parent's positions anyway) or the parent's death comes first."""
    while True:
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            if commands.poll() or os.getppid() != parent_pid:
                return
