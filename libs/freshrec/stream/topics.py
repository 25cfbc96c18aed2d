"""Creating the topics freshrec produces to, idempotently."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from freshrec.errors import BrokerUnavailable

__all__ = ["create_missing_topics", "ensure_topics"]

logger = logging.getLogger(__name__)


def create_missing_topics(
    admin: KafkaAdminClient,
    topics: Mapping[str, int],
    *,
    timeout_s: float = 10.0,
    replication_factor: int = -1,
) -> list[str]:
    """Create each topic of `topics` that does not exist yet, through an open admin client.

    Existing topics are left as they are, whatever their partition count. Returns once every
    created topic has a leader for each partition, so producing to it works right away.

    Args:
        admin: a connected admin client.
        topics: topic name to partition count.
        timeout_s: bound on each broker operation.
        replication_factor: -1 uses the broker's `default.replication.factor`.

    Returns:
        The names of the topics this call created.

    Raises:
        KafkaError: the broker refused or did not answer (callers wrap it).
    """
    created: list[str] = []
    timeout_ms = int(timeout_s * 1000)
    # one request per topic: an existing topic must not hide the outcome for the others
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        try:
            admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": replication_factor}},
                timeout_ms=timeout_ms,
            )
        except TopicAlreadyExistsError:
            continue
        created.append(name)
        logger.info("created Kafka topic %s with %d partitions", name, partitions)
    if created:
        admin.wait_for_topics(created, timeout_ms=timeout_ms)
    return created


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    timeout_s: float = 10.0,
    replication_factor: int = -1,
) -> list[str]:
    """Create the missing ones among `topics` (name → partitions); idempotent.

    Args:
        bootstrap: Kafka bootstrap servers, `host:port[,host:port...]`.
        topics: topic name to partition count.
        timeout_s: bound on connecting and on each broker operation.
        replication_factor: -1 uses the broker's `default.replication.factor`.

    Returns:
        The names of the topics this call created.

    Raises:
        BrokerUnavailable: Kafka did not answer within `timeout_s` or refused a creation.
    """
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="freshrec-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            reconnect_backoff_max_ms=1000,
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} does not answer: {exc}") from exc
    try:
        return create_missing_topics(
            admin, topics, timeout_s=timeout_s, replication_factor=replication_factor
        )
    except KafkaError as exc:
        raise BrokerUnavailable(f"creating topics on Kafka at {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()
