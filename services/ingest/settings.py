"""Ingest settings (`FRESHREC_*` environment variables)."""

from __future__ import annotations

from pydantic import Field

from freshrec.settings import CommonSettings
from freshrec.stream.events import DEFAULT_FUTURE_TOLERANCE_S, DEFAULT_MAX_BATCH_EVENTS

__all__ = ["IngestSettings"]


class IngestSettings(CommonSettings):
    """Everything the ingest process can be told."""

    ingest_host: str = Field("127.0.0.1", description="HTTP bind address.")
    ingest_port: int = Field(8001, ge=0, le=65535, description="HTTP port.")
    max_batch_events: int = Field(
        DEFAULT_MAX_BATCH_EVENTS,
        ge=1,
        le=100_000,
        description="Most events in one POST /v1/events; more is answered 413.",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body; larger is answered 413 before it is read whole.",
    )
    future_tolerance_s: float = Field(
        DEFAULT_FUTURE_TOLERANCE_S,
        ge=0,
        le=86_400,
        description="How far in the future an event's timestamp may lie (client clock skew).",
    )
    max_in_flight_batches: int = Field(
        16,
        ge=1,
        le=1024,
        description="Batches validated or awaiting Kafka's acknowledgement at once; more is "
        "answered 429.",
    )
    events_topic_partitions: int = Field(
        4, ge=1, le=10_000, description="Partitions of the events topic when ingest creates it."
    )
    produce_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Longest wait for Kafka to acknowledge a batch before answering 503.",
    )
    kafka_connect_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Bound on connecting to Kafka, metadata waits and the readiness probe.",
    )
    shutdown_timeout_s: float = Field(
        5.0, ge=0, le=120, description="Time given to pending messages when stopping."
    )
