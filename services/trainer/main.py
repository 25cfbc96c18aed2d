"""Trainer process: the training loop in the main thread, metrics/health over HTTP beside it."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import redis
import uvicorn

from freshrec.api import freeze_startup_heap
from freshrec.models import ModelConfig
from freshrec.stream.consumer import KafkaEventSource
from freshrec.stream.deadletter import DeadLetterWriter
from freshrec.stream.topics import ensure_topics
from freshrec.table import RedisTableBackend, load_tables, open_tables
from freshrec.training import Message, OnlineTrainer, TrainerConfig, TrainingLoop
from services.trainer.settings import TrainerSettings
from services.trainer.status import status_app

__all__ = ["build_trainer", "main"]

logger = logging.getLogger(__name__)


def build_trainer(
    settings: TrainerSettings, client: redis.Redis, dead_letters: DeadLetterWriter | None
) -> OnlineTrainer:
    """The trainer over the Redis tables named in the table config."""
    tables = load_tables(settings.table_config)
    stores = open_tables(tables, RedisTableBackend(client, settings.namespace))
    dims = {store.config.name: store.config.dim for store in stores}
    config = TrainerConfig(
        **settings.trainer.model_dump(),
        compute_threads=settings.compute_threads,
        model=ModelConfig(
            user_dim=dims["user"], item_dim=dims["item"], context_dim=dims["context"]
        ),
        examples=settings.examples,
    )

    def sink(message: Message, reason: str, detail: str) -> None:
        if dead_letters is not None:
            dead_letters.send(
                message.value or b"",
                reason,
                message.topic,
                message.partition,
                message.offset,
                key=message.key,
                detail=detail,
            )

    return OnlineTrainer(stores, config, dead_letters=sink)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        logger.info("signal %d: finishing the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def main(settings: TrainerSettings | None = None) -> None:
    """Run the trainer until SIGTERM/SIGINT; the batch in progress is committed first."""
    settings = settings or TrainerSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ensure_topics(
        settings.kafka_bootstrap,
        {settings.events_topic: settings.events_topic_partitions, settings.dead_letter_topic: 1},
    )
    client = redis.Redis.from_url(settings.redis_url)
    dead_letters = DeadLetterWriter(settings.kafka_bootstrap, settings.dead_letter_topic)
    stop = _stop_on_signals()
    trainer = build_trainer(settings, client, dead_letters)
    source = KafkaEventSource(
        settings.kafka_bootstrap,
        settings.events_topic,
        trainer.config.group,
        max_records=settings.batch_size,
        config=settings.consumer,
    )
    loop = TrainingLoop(
        trainer, source, batch_size=settings.batch_size, max_wait_s=settings.max_batch_wait_s
    )
    server = uvicorn.Server(
        uvicorn.Config(
            status_app(loop, client),
            host=settings.trainer_host,
            port=settings.trainer_port,
            log_level="warning",
        )
    )
    http = threading.Thread(target=server.run, name="trainer-http", daemon=True)
    http.start()
    freeze_startup_heap()
    try:
        loop.run(stop)
    finally:
        source.close()
        dead_letters.close()
        server.should_exit = True
        http.join(timeout=5)
        client.close()


if __name__ == "__main__":
    main()
