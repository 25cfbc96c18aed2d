"""Prometheus metrics of the event stream: ingest acceptance, Kafka producing, dead letters.

Label values come from fixed sets (error types, top-level field names, exception class
names), never from ids or free text.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from freshrec.metrics import LATENCY_BUCKETS_S

__all__ = [
    "BATCH_SIZE",
    "BATCHES_IN_FLIGHT",
    "BATCHES_REJECTED",
    "BROKER_ERRORS",
    "DEAD_LETTERS",
    "EVENTS_ACCEPTED",
    "EVENTS_REJECTED",
    "PRODUCE_LATENCY",
]

EVENTS_ACCEPTED = Counter(
    "freshrec_ingest_events_accepted_total",
    "Events the broker acknowledged on behalf of ingest.",
)
EVENTS_REJECTED = Counter(
    "freshrec_ingest_events_rejected_total",
    "Events refused before producing, by error type and top-level field ('<event>' for the "
    "whole event, 'extra' for an unknown field; 'rejected_with_batch' counts valid events "
    "refused because others in their batch were invalid).",
    ["reason", "field"],
)
BATCHES_REJECTED = Counter(
    "freshrec_ingest_batches_rejected_total",
    "Posted batches refused, by reason: body_too_large, too_many_events, invalid_body, "
    "invalid_events, overloaded, broker_unavailable.",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "freshrec_ingest_batch_size_events",
    "Events per posted batch that passed validation.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
)
BATCHES_IN_FLIGHT = Gauge(
    "freshrec_ingest_batches_in_flight",
    "Batches being validated or waiting for the broker's acknowledgement.",
)
PRODUCE_LATENCY = Histogram(
    "freshrec_kafka_produce_duration_seconds",
    "Time from handing a batch to the Kafka producer until the broker acknowledged every "
    "message (or the attempt failed), by client.",
    ["client"],
    buckets=LATENCY_BUCKETS_S,
)
BROKER_ERRORS = Counter(
    "freshrec_kafka_broker_errors_total",
    "Kafka operations that failed, by client and Kafka error class.",
    ["client", "error"],
)
DEAD_LETTERS = Counter(
    "freshrec_dead_letters_total",
    "Poison messages written to the dead-letter topic, by reason.",
    ["reason"],
)
