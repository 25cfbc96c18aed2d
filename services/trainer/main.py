"""Trainer process: the training loop in the main thread, metrics/health over HTTP beside it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from types import FrameType

import redis
import uvicorn
from fastapi import FastAPI

from freshrec.api import freeze_startup_heap, install_common
from freshrec.models import ModelConfig
from freshrec.stream.deadletter import DeadLetterWriter
from freshrec.stream.topics import ensure_topics
from freshrec.table import RedisTableBackend, load_tables, open_tables
from freshrec.training import (
    ExampleConfig,
    LoopConfig,
    Message,
    OnlineTrainer,
    TrainerConfig,
    TrainingLoop,
)
from services.trainer.settings import TrainerSettings

__all__ = ["build_trainer", "main"]

logger = logging.getLogger(__name__)


def build_trainer(
    settings: TrainerSettings, client: redis.Redis, dead_letters: DeadLetterWriter | None
) -> OnlineTrainer:
    """The trainer over the Redis tables named in the table config."""
    tables = load_tables(settings.table_config)
    stores = open_tables(tables, RedisTableBackend(client, settings.namespace))
    user, item, context = (store.config for store in stores)
    config = TrainerConfig(
        group=settings.trainer_group,
        batch_size=settings.batch_size,
        dense_lr=settings.dense_lr,
        publish_interval_s=settings.publish_interval_s,
        expire_every_batches=settings.expire_every_batches,
        max_message_bytes=settings.max_message_bytes,
        compute_threads=settings.compute_threads,
        model=ModelConfig(user_dim=user.dim, item_dim=item.dim, context_dim=context.dim),
        examples=ExampleConfig(
            positive_rating=settings.positive_rating,
            join_window_s=settings.join_window_s,
            negative_keep_rate=settings.negative_keep_rate,
            sampled_negatives=settings.sampled_negatives,
        ),
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


def _status_app(loop: TrainingLoop, client: redis.Redis) -> FastAPI:
    app = FastAPI(title="freshrec trainer", docs_url=None, redoc_url=None)

    async def readiness() -> Mapping[str, bool]:
        try:
            redis_ok = bool(client.ping())
        except redis.RedisError:
            redis_ok = False
        return {"redis": redis_ok, "kafka_assigned": loop.ready.is_set()}

    install_common(app, "trainer", readiness)

    @app.get("/v1/status")
    def status() -> dict[str, object]:
        """Trainer progress: batches, offsets, watermark, published model version."""
        return loop.trainer.state_summary()

    return app


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
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        logger.info("signal %d: finishing the current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    trainer = build_trainer(settings, client, dead_letters)
    loop = TrainingLoop(
        trainer,
        LoopConfig(
            bootstrap=settings.kafka_bootstrap,
            topic=settings.events_topic,
            batch_size=settings.batch_size,
            max_wait_s=settings.max_batch_wait_s,
            start_from_beginning=settings.start_from_beginning,
            session_timeout_ms=settings.session_timeout_ms,
            reader_process=settings.reader_process,
        ),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            _status_app(loop, client),
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
        loop.close()
        dead_letters.close()
        server.should_exit = True
        http.join(timeout=5)
        client.close()


if __name__ == "__main__":
    main()
