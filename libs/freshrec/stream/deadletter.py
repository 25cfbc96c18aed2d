"""`DeadLetterWriter`: parks messages no consumer can use on the dead-letter topic.

The original bytes are kept unchanged (and the original key, when given); where they came
from and why they were refused travel in headers:

- `freshrec-reason`: a short reason code (e.g. `not_json`, `schema`, `oversized`)
- `freshrec-detail`: a human-readable explanation (at most 1 KiB)
- `freshrec-source-topic`, `freshrec-source-partition`, `freshrec-source-offset`

Header values are UTF-8; partition and offset are decimal strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from freshrec.stream.base import Message
from freshrec.stream.events import POISON_REASONS
from freshrec.stream.metrics import DEAD_LETTERS
from freshrec.stream.producer import KafkaRecord, ProducerConnection

__all__ = [
    "HEADER_DETAIL",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "DeadLetter",
    "DeadLetterWriter",
]

HEADER_REASON: Final = "freshrec-reason"
HEADER_DETAIL: Final = "freshrec-detail"
HEADER_SOURCE_TOPIC: Final = "freshrec-source-topic"
HEADER_SOURCE_PARTITION: Final = "freshrec-source-partition"
HEADER_SOURCE_OFFSET: Final = "freshrec-source-offset"

_MAX_REASON_BYTES: Final = 256
_MAX_DETAIL_BYTES: Final = 1024
# a poison message can be as large as the broker allowed on the source topic
_MAX_DEAD_LETTER_BYTES: Final = 16 * 1024 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """One refused message and where it came from."""

    raw: bytes | None
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None = None
    detail: str | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def _clip(text: str, limit: int) -> bytes:
    return text.encode("utf-8", errors="replace")[:limit]


def _record(letter: DeadLetter) -> KafkaRecord:
    headers = [
        *letter.headers,  # the message's own headers, byte for byte, before freshrec's
        (HEADER_REASON, _clip(letter.reason, _MAX_REASON_BYTES)),
        (HEADER_SOURCE_TOPIC, letter.source_topic.encode()),
        (HEADER_SOURCE_PARTITION, str(letter.source_partition).encode()),
        (HEADER_SOURCE_OFFSET, str(letter.source_offset).encode()),
    ]
    if letter.detail:
        headers.append((HEADER_DETAIL, _clip(letter.detail, _MAX_DETAIL_BYTES)))
    return letter.key, letter.raw, headers


class DeadLetterWriter:
    """Produces poison messages to the dead-letter topic (idempotent producer, `acks=all`).

    Blocking and thread-safe; connects lazily like `EventProducer`.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: the dead-letter topic.
        partitions: create `topic` with this many partitions on first use if missing; None
            leaves creation to the broker or an operator.
        connect_timeout_s: bound on connecting and readiness probes.
        produce_timeout_s: bound on waiting for the broker's acknowledgement.
        client_id: Kafka client id and the `client` metric label.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: int | None = 1,
        connect_timeout_s: float = 2.0,
        produce_timeout_s: float = 5.0,
        client_id: str = "freshrec-dead-letter",
    ) -> None:
        self.topic = topic
        self._connection = ProducerConnection(
            bootstrap,
            client_id=client_id,
            topics=None if partitions is None else {topic: partitions},
            connect_timeout_s=connect_timeout_s,
            produce_timeout_s=produce_timeout_s,
            max_message_bytes=_MAX_DEAD_LETTER_BYTES,
        )

    def send(
        self,
        raw: bytes | None,
        reason: str,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        *,
        key: bytes | None = None,
        detail: str | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Park one message; return after the broker acknowledged it.

        Args:
            raw: the message value exactly as consumed (None stays None: a null value).
            reason: why it was refused; a short code such as `PoisonMessage.reason`.
            source_topic: the topic it was consumed from.
            source_partition: its partition there.
            source_offset: its offset there.
            key: its key, kept so the dead-letter topic partitions like the source.
            detail: a longer explanation.
            headers: its headers, kept in order before the `freshrec-*` ones.

        Raises:
            BrokerUnavailable: Kafka did not acknowledge in time.
        """
        self.send_many(
            [
                DeadLetter(
                    raw, reason, source_topic, source_partition, source_offset, key, detail, headers
                )
            ]
        )

    def park(self, message: Message, reason: str, detail: str) -> None:
        """Park a consumed message as it was (value, key and headers byte for byte, a null
        value staying null); the trainer's dead-letter sink."""
        self.send(
            message.value,
            reason,
            message.topic,
            message.partition,
            message.offset,
            key=message.key,
            detail=detail,
            headers=message.headers,
        )

    def send_many(self, letters: Sequence[DeadLetter]) -> None:
        """Park several messages; return after the broker acknowledged all of them.

        Raises:
            BrokerUnavailable: Kafka did not acknowledge every message in time.
        """
        self._connection.send_all(self.topic, [_record(letter) for letter in letters])
        for letter in letters:
            # free-text reasons must not become label values
            label = letter.reason if letter.reason in POISON_REASONS else "other"
            DEAD_LETTERS.labels(label).inc()

    def ready(self) -> bool:
        """Whether the broker answers now."""
        return self._connection.ready()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is pending (at most `timeout_s`) and disconnect."""
        self._connection.close(timeout_s)
