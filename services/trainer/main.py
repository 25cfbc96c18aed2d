"""Trainer process: the training loop in the main thread, metrics/health over HTTP beside it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn
from kafka.errors import KafkaError

from freshrec.api import freeze_startup_heap
from freshrec.errors import BrokerUnavailable
from freshrec.models import ModelConfig
from freshrec.stream.base import EventSource
from freshrec.stream.consumer import KafkaEventSource
from freshrec.stream.deadletter import DeadLetterWriter
from freshrec.stream.topics import ensure_topics
from freshrec.table import TableBackend, load_tables, open_backend, open_tables
from freshrec.training import OnlineTrainer, TrainerConfig, TrainingLoop
from freshrec.training.loop import RETRY_FIRST_S, RETRY_MAX_S
from services.trainer.settings import TrainerSettings
from services.trainer.status import TrainerParts, status_app

__all__ = ["build_trainer", "main"]

logger = logging.getLogger(__name__)

_REDIS_TIMEOUT_S = 5.0


def build_trainer(
    settings: TrainerSettings, backend: TableBackend, dead_letters: DeadLetterWriter | None
) -> OnlineTrainer:
    """The trainer over the tables named in the table config, on `backend`."""
    tables = load_tables(settings.table_config)
    stores = open_tables(tables, backend)
    dims = {store.config.name: store.config.dim for store in stores}
    config = TrainerConfig(
        **settings.trainer.model_dump(),
        compute_threads=settings.compute_threads,
        model=ModelConfig(
            user_dim=dims["user"], item_dim=dims["item"], context_dim=dims["context"]
        ),
        examples=settings.examples,
    )

    sink = None if dead_letters is None else dead_letters.park
    return OnlineTrainer(stores, config, dead_letters=sink)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        logger.info("signal %d: finishing the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _open_source(
    settings: TrainerSettings, group: str, stop: threading.Event
) -> EventSource | None:
    """The Kafka source, once Kafka answers (topics created first); None if stopped before."""
    wait_s = RETRY_FIRST_S
    while not stop.is_set():
        try:
            ensure_topics(
                settings.kafka_bootstrap,
                {
                    settings.events_topic: settings.events_topic_partitions,
                    settings.dead_letter_topic: 1,
                },
            )
            return KafkaEventSource(
                settings.kafka_bootstrap,
                settings.events_topic,
                group,
                max_records=settings.batch_size,
                config=settings.consumer,
            )
        except (BrokerUnavailable, KafkaError) as exc:
            logger.warning("waiting for Kafka at %s: %s", settings.kafka_bootstrap, exc)
            stop.wait(wait_s)
            wait_s = min(wait_s * 2, RETRY_MAX_S)
    return None


def main(settings: TrainerSettings | None = None) -> None:
    """Run the trainer until SIGTERM/SIGINT; the batch in progress is committed first."""
    settings = settings or TrainerSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = _stop_on_signals()
    # a bounded socket timeout: a Redis that stalls is an outage the loop rides out
    backend = open_backend(settings.table_backend(socket_timeout_s=_REDIS_TIMEOUT_S))
    dead_letters = DeadLetterWriter(settings.kafka_bootstrap, settings.dead_letter_topic)
    parts = TrainerParts(build_trainer(settings, backend, dead_letters), backend, dead_letters)
    config = uvicorn.Config(
        status_app(parts),
        host=settings.trainer_host,
        port=settings.trainer_port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    http = threading.Thread(target=server.run, name="trainer-http", daemon=True)
    http.start()
    source = _open_source(settings, parts.trainer.config.group, stop)
    try:
        if source is not None:
            parts.loop = TrainingLoop(
                parts.trainer, source, batch_size=settings.batch_size,
                max_wait_s=settings.max_batch_wait_s,
            )  # fmt: skip
            freeze_startup_heap()
            parts.loop.run(stop)
    finally:
        if source is not None:
            source.close()
        dead_letters.close()
        server.should_exit = True
        http.join(timeout=5)
        backend.close()


if __name__ == "__main__":
    main()
