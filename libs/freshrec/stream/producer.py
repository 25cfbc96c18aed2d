"""`EventProducer`: the Kafka `EventSink`, answering only after the broker acknowledged.

kafka-python is blocking; every method here blocks for a bounded time and is meant to be
called from a worker thread (the ingest service uses `anyio.to_thread.run_sync`).

Connection is lazy: creating an `EventProducer` never touches the network, so a service
starts while Kafka is down and answers 503 until it is back. The first send (or readiness
probe) connects; a failed connection is retried by a later call, at most once per
`RECONNECT_BACKOFF_S` so a burst of requests during an outage fails fast instead of
queueing behind one another's connection attempts.

The same holds for a broker that goes away while connected: after a send that was not
acknowledged, sends fail at once for `RECONNECT_BACKOFF_S`; then one send at a time tries
the broker (the others still fail at once) until one is acknowledged. A batch therefore waits
the full produce timeout only when it is the one probing the broker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, KafkaTimeoutError

from freshrec.errors import BrokerUnavailable
from freshrec.stream.base import EventSink
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event, event_key
from freshrec.stream.metrics import BROKER_ERRORS, PRODUCE_LATENCY
from freshrec.stream.topics import (
    RECONNECT_BACKOFF_MAX_MS,
    create_missing_topics,
    open_admin_client,
)

__all__ = [
    "RECONNECT_BACKOFF_S",
    "CircuitBreaker",
    "EventProducer",
    "KafkaRecord",
    "ProducerConnection",
]

logger = logging.getLogger(__name__)

RECONNECT_BACKOFF_S: Final = 1.0
"""After a failed connection attempt, calls within this window fail without retrying."""

SENDER_STOP_S: Final = 2.0
"""How long closing a stuck producer waits for its sender thread to fail its sends and exit."""

KafkaRecord = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
"""One message to produce: `(key, value, headers)`."""


class CircuitBreaker:
    """Fails calls at once while a dependency is known to be down, probing it one call at a time.

    Closed (no recent failure): every call passes. After a failure: every call is refused for
    `backoff_s`; after that one call at a time passes as a probe, the others are still refused,
    until a probe succeeds. Thread-safe.

    Args:
        backoff_s: how long after a failure every call is refused.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, backoff_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff_s = backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failed_at: float | None = None
        self._probing = False
        self.reason = ""

    def admit(self) -> bool:
        """Whether a call may go ahead now; a True after a failure makes the caller the probe."""
        with self._lock:
            if self._failed_at is None:
                return True
            if self._probing or self._clock() - self._failed_at < self._backoff_s:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        """The call went through: close the breaker."""
        with self._lock:
            self._failed_at, self._probing, self.reason = None, False, ""

    def failed(self, reason: str) -> None:
        """The call failed: refuse calls for the backoff, then probe again."""
        with self._lock:
            self._failed_at, self._probing, self.reason = self._clock(), False, reason


class ProducerConnection:
    """A lazily (re)connected idempotent Kafka producer plus an admin client for probes.

    Shared by `EventProducer` and `DeadLetterWriter`. Thread-safe.

    Args:
        bootstrap: Kafka bootstrap servers.
        client_id: Kafka client id, also the `client` label of the metrics.
        topics: topics (name → partitions) created if missing on the first connection.
        connect_timeout_s: bound on bootstrapping, metadata waits and readiness probes.
        produce_timeout_s: bound from handing a batch over until every message is
            acknowledged (Kafka's `delivery.timeout.ms`).
        max_message_bytes: largest record the producer accepts (`max.request.size`).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        topics: Mapping[str, int] | None = None,
        connect_timeout_s: float = 2.0,
        produce_timeout_s: float = 5.0,
        max_message_bytes: int = 1024 * 1024,
    ) -> None:
        if connect_timeout_s <= 0 or produce_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self.bootstrap = bootstrap
        self.client_id = client_id
        self._topics = dict(topics or {})
        self._connect_timeout_s = connect_timeout_s
        self._produce_timeout_s = produce_timeout_s
        self._max_message_bytes = max_message_bytes
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._topics_ready = not self._topics
        self._connect_lock = threading.Lock()
        self._admin_lock = threading.Lock()
        self._failed_at = -math.inf
        self._failure = ""
        self._closed = False
        self._sends = CircuitBreaker(RECONNECT_BACKOFF_S)

    # ------------------------------------------------------------------ connecting

    def _producer_config(self) -> dict[str, Any]:
        connect_ms = int(self._connect_timeout_s * 1000)
        produce_ms = int(self._produce_timeout_s * 1000)
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 0,
            # delivery timeout bounds the whole send (retries included); request timeout
            # equal to it satisfies Kafka's delivery >= linger + request rule
            "delivery_timeout_ms": produce_ms,
            "request_timeout_ms": produce_ms,
            "max_block_ms": connect_ms,
            "bootstrap_timeout_ms": connect_ms,
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            "max_request_size": self._max_message_bytes,
        }

    def _admin_client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = open_admin_client(
                self.bootstrap,
                client_id=f"{self.client_id}-admin",
                timeout_s=self._connect_timeout_s,
            )
        return self._admin

    def _failed(self, what: str, exc: KafkaError) -> BrokerUnavailable:
        self._failed_at = time.monotonic()
        self._failure = f"{what}: {exc}"
        BROKER_ERRORS.labels(self.client_id, type(exc).__name__).inc()
        return BrokerUnavailable(f"Kafka at {self.bootstrap}: {self._failure}")

    def producer(self) -> KafkaProducer:
        """The connected producer, connecting (and creating missing topics) if needed.

        Raises:
            BrokerUnavailable: Kafka does not answer, or did not a moment ago.
        """
        producer = self._producer
        if producer is not None and self._topics_ready:
            return producer
        if not self._connect_lock.acquire(timeout=self._connect_timeout_s):
            raise BrokerUnavailable(f"still connecting to Kafka at {self.bootstrap}")
        try:
            if self._closed:
                raise BrokerUnavailable("the Kafka producer is closed")
            if self._producer is None or not self._topics_ready:
                if time.monotonic() - self._failed_at < RECONNECT_BACKOFF_S:
                    raise BrokerUnavailable(f"Kafka at {self.bootstrap}: {self._failure}")
                if self._producer is None:
                    try:
                        self._producer = KafkaProducer(**self._producer_config())
                    except KafkaError as exc:
                        raise self._failed("connecting failed", exc) from exc
                    logger.info("connected a Kafka producer to %s", self.bootstrap)
                if not self._topics_ready:
                    with self._admin_lock:
                        try:
                            create_missing_topics(
                                self._admin_client(),
                                self._topics,
                                timeout_s=self._connect_timeout_s,
                            )
                        except KafkaError as exc:
                            raise self._failed("creating topics failed", exc) from exc
                    self._topics_ready = True
            return self._producer
        finally:
            self._connect_lock.release()

    def discard(self, producer: KafkaProducer, reason: str) -> None:
        """Drop `producer` after a failed send; the next call connects a new one."""
        with self._connect_lock:
            if self._producer is producer:
                self._producer = None
        logger.warning("discarding the Kafka producer to %s after %s", self.bootstrap, reason)
        close_producer(producer, 0.0)

    # ------------------------------------------------------------------ producing

    def send_all(self, topic: str, records: Sequence[KafkaRecord]) -> None:
        """Produce `records` to `topic`; return only when the broker acknowledged all.

        Raises:
            BrokerUnavailable: any record was not acknowledged within the produce timeout
                (earlier ones may have been).
        """
        if not records:
            return
        producer = self.producer()
        if not self._sends.admit():
            raise BrokerUnavailable(
                f"Kafka at {self.bootstrap} did not acknowledge a moment ago: {self._sends.reason}"
            )
        start = time.perf_counter()
        try:
            futures = [
                producer.send(topic, key=key, value=value, headers=headers)
                for key, value, headers in records
            ]
            # the delivery timeout already fails each future in time; the margin only
            # guards against a future the producer never completes
            deadline = time.monotonic() + self._produce_timeout_s + 1.0
            for future in futures:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaError as exc:
            self._sends.failed(f"{type(exc).__name__}: {exc}")
            BROKER_ERRORS.labels(self.client_id, type(exc).__name__).inc()
            # a producer whose batch failed is not trusted again: after a batch expires,
            # kafka-python's idempotent producer resets its producer id and may never complete
            # another send, even once the broker is back. A new producer costs one bootstrap;
            # records of this one that did reach the topic are only duplicates of a batch
            # answered 503, which consumers drop by event id.
            self.discard(producer, f"a failed send ({type(exc).__name__})")
            raise BrokerUnavailable(
                f"Kafka at {self.bootstrap} did not acknowledge {len(records)} messages to "
                f"{topic}: {exc}"
            ) from exc
        except BaseException:
            self._sends.failed("the send was interrupted")
            raise
        else:
            self._sends.succeeded()
        finally:
            PRODUCE_LATENCY.labels(self.client_id).observe(time.perf_counter() - start)

    # ------------------------------------------------------------------ probing

    def ready(self) -> bool:
        """Whether the broker answers a metadata request now and a producer is connected."""
        if not self._admin_lock.acquire(timeout=self._connect_timeout_s):
            return False
        try:
            self._admin_client().describe_cluster()
        except KafkaError as exc:
            BROKER_ERRORS.labels(self.client_id, type(exc).__name__).inc()
            logger.debug("Kafka readiness probe failed: %s", str(exc))
            return False
        finally:
            self._admin_lock.release()
        try:
            self.producer()
        except BrokerUnavailable as exc:
            logger.debug("Kafka readiness probe failed: %s", exc.message)
            return False
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush pending messages (at most `timeout_s`) and close both clients."""
        with self._connect_lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, timeout_s)
        with self._admin_lock:
            admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()


def close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close `producer`, waiting at most `timeout_s` for its pending sends, and always stop it.

    kafka-python 3.0.12's `close` flushes first and raises when the flush times out, before it
    stops its sender thread, and a producer that lost its producer id during an outage never
    completes a flush. Then the sender is force-closed: it fails the pending sends (their
    callers already answered 503) and exits, and the producer is closed without waiting.
    """
    try:
        producer.close(timeout=timeout_s)
        return
    except KafkaTimeoutError:
        logger.warning("pending Kafka sends not acknowledged within %.1f s; dropped", timeout_s)
    sender = producer._sender
    sender.force_close()
    sender.join(SENDER_STOP_S)
    try:
        producer.close(timeout=0)
    except KafkaTimeoutError:
        logger.warning("the Kafka producer's sender did not stop within %.1f s", SENDER_STOP_S)


class EventProducer(EventSink):
    """Produces events to the events topic with the idempotent producer and `acks=all`.

    Each event becomes one message keyed by its user id (one user's events stay in one
    partition, in order), with the value `encode_event(event, accepted_at)`.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: the events topic.
        partitions: create `topic` with this many partitions on the first connection if it
            does not exist; None leaves topic creation to the broker or an operator.
        connect_timeout_s: bound on connecting, metadata waits and readiness probes.
        produce_timeout_s: bound on waiting for the broker's acknowledgement of a batch.
        client_id: Kafka client id and the `client` metric label.
        clock: wall clock for `accepted_at`.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: int | None = None,
        connect_timeout_s: float = 2.0,
        produce_timeout_s: float = 5.0,
        client_id: str = "freshrec-ingest",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self._clock = clock
        self._connection = ProducerConnection(
            bootstrap,
            client_id=client_id,
            topics=None if partitions is None else {topic: partitions},
            connect_timeout_s=connect_timeout_s,
            produce_timeout_s=produce_timeout_s,
        )

    def send_batch(self, events: Sequence[Event], accepted_at: float | None = None) -> None:
        """Produce every event; return only after the broker acknowledged all of them.

        Raises:
            BrokerUnavailable: Kafka is down or did not acknowledge every event in time.
        """
        stamp = self._clock() if accepted_at is None else accepted_at
        records: list[KafkaRecord] = [
            (event_key(event), encode_event(event, stamp), []) for event in events
        ]
        self._connection.send_all(self.topic, records)

    def ready(self) -> bool:
        """Whether the broker answers now (bounded by the connect timeout)."""
        return self._connection.ready()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is pending (at most `timeout_s`) and disconnect."""
        self._connection.close(timeout_s)
