"""The event stream: the event contract, producing to Kafka, dead letters and ingest's core.

- `events`: the `Event` model, batch validation, message encoding and decoding
  (`docs/specs/events.md`).
- `base` / `producer` / `memory`: the `EventSink` seam, its Kafka implementation
  (`EventProducer`) and its reference implementation (`InMemoryEventSink`).
- `base` / `consumer` / `memory`: the `EventSource` seam (a consumer-group member whose
  owner decides positions), its Kafka implementation (`KafkaEventSource`, with the record
  reader process of `reader`) and its reference implementation (`InMemoryEventSource`).
- `deadletter`: `DeadLetterWriter` for messages consumers cannot use.
- `topics`: `ensure_topics`, idempotent topic creation.
- `ingest`: `EventIngestor`, from a posted body to acknowledged events.
"""

from freshrec.stream.base import (
    EventSink,
    EventSource,
    Message,
    Partition,
    PartitionOwner,
    SourceLag,
)
from freshrec.stream.consumer import KafkaEventSource, KafkaSourceConfig
from freshrec.stream.deadletter import DeadLetter, DeadLetterWriter
from freshrec.stream.events import (
    SCHEMA_VERSION,
    AcceptedEvent,
    Event,
    EventBatch,
    EventErrorDetail,
    EventType,
    InvalidEvents,
    PoisonMessage,
    event_batch_json_schema,
    validate_events,
)
from freshrec.stream.ingest import EventIngestor
from freshrec.stream.memory import InMemoryEventSink, InMemoryEventSource, PartitionLog
from freshrec.stream.messages import (
    ConsumedEvent,
    decode_event,
    encode_event,
    event_key,
    read_event,
)
from freshrec.stream.producer import EventProducer, ProducerConnection
from freshrec.stream.topics import ensure_topics

__all__ = [
    "SCHEMA_VERSION",
    "AcceptedEvent",
    "ConsumedEvent",
    "DeadLetter",
    "DeadLetterWriter",
    "Event",
    "EventBatch",
    "EventErrorDetail",
    "EventIngestor",
    "EventProducer",
    "EventSink",
    "EventSource",
    "EventType",
    "InMemoryEventSink",
    "InMemoryEventSource",
    "InvalidEvents",
    "KafkaEventSource",
    "KafkaSourceConfig",
    "Message",
    "Partition",
    "PartitionLog",
    "PartitionOwner",
    "PoisonMessage",
    "ProducerConnection",
    "SourceLag",
    "decode_event",
    "encode_event",
    "ensure_topics",
    "event_batch_json_schema",
    "event_key",
    "read_event",
    "validate_events",
]
