"""Creating the topics freshrec produces to, idempotently."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from freshrec.errors import BrokerUnavailable

__all__ = [
    "RECONNECT_BACKOFF_MAX_MS",
    "create_missing_topics",
    "ensure_topics",
    "open_admin_client",
]

RECONNECT_BACKOFF_MAX_MS: Final = 1000
"""Every Kafka client's bound on its reconnect backoff. kafka-python's default grows to 30 s,
so a client that failed through a long outage would find the restarted broker only seconds
after it is back."""

logger = logging.getLogger(__name__)


class _AdminClient(KafkaAdminClient):  # type: ignore[misc]
    """`KafkaAdminClient` that releases its IO thread when it cannot bootstrap.

    kafka-python 3.0 starts the client's IO thread before bootstrapping and leaves it running
    when bootstrapping fails; a process probing a dead broker would gain a thread per probe.
    """

    def __init__(self, **configs: Any) -> None:
        try:
            super().__init__(**configs)
        except KafkaError:
            client, net = getattr(self, "_client", None), getattr(self, "_net", None)
            if client is not None:
                client.close()
            if net is not None:
                net.stop()
            raise


def open_admin_client(bootstrap: str, *, client_id: str, timeout_s: float) -> KafkaAdminClient:
    """A connected admin client whose requests time out after `timeout_s`.

    Raises:
        KafkaError: Kafka did not answer within `timeout_s` (nothing is left running).
    """
    timeout_ms = int(timeout_s * 1000)
    return _AdminClient(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
    )


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
    try:
        admin = open_admin_client(bootstrap, client_id="freshrec-admin", timeout_s=timeout_s)
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
