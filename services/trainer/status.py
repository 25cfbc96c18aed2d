"""The trainer's HTTP side: metrics, health, readiness and progress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from freshrec.api import install_common
from freshrec.stream.deadletter import DeadLetterWriter
from freshrec.table import TableBackend
from freshrec.training import OnlineTrainer, TrainingLoop

__all__ = ["TrainerParts", "status_app"]


@dataclass
class TrainerParts:
    """What the status app reports on; `loop` is None until Kafka first answered."""

    trainer: OnlineTrainer
    backend: TableBackend
    dead_letters: DeadLetterWriter
    loop: TrainingLoop | None = None


def _checks(parts: TrainerParts) -> dict[str, bool]:
    loop = parts.loop
    return {
        "redis": parts.backend.ping(),
        "kafka": parts.dead_letters.ready(),
        "kafka_assigned": loop is not None and loop.source.ready(),
        "training": loop is not None and loop.outage is None,
    }


def status_app(parts: TrainerParts) -> FastAPI:
    """The status app: ready while Redis and Kafka answer, a partition is owned and training
    is not paused by an outage."""
    app = FastAPI(title="freshrec trainer", docs_url=None, redoc_url=None)

    async def readiness() -> Mapping[str, bool]:
        return await run_in_threadpool(_checks, parts)  # the probes block for a bounded time

    install_common(app, "trainer", readiness)

    @app.get("/v1/status")
    def status() -> dict[str, object]:
        """Trainer progress: batches, offsets, watermark, published model version, outage."""
        outage = None if parts.loop is None else parts.loop.outage
        return {**parts.trainer.state_summary(), "outage": outage}

    return app
