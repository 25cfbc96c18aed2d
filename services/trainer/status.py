"""The trainer's HTTP side: metrics, health, readiness and progress."""

from __future__ import annotations

from collections.abc import Mapping

import redis
from fastapi import FastAPI

from freshrec.api import install_common
from freshrec.training import TrainingLoop

__all__ = ["status_app"]


def status_app(loop: TrainingLoop, client: redis.Redis) -> FastAPI:
    """The status app: ready once Redis answers and the group assigned a partition."""
    app = FastAPI(title="freshrec trainer", docs_url=None, redoc_url=None)

    async def readiness() -> Mapping[str, bool]:
        try:
            redis_ok = bool(client.ping())
        except redis.RedisError:
            redis_ok = False
        return {"redis": redis_ok, "kafka_assigned": loop.source.ready()}

    install_common(app, "trainer", readiness)

    @app.get("/v1/status")
    def status() -> dict[str, object]:
        """Trainer progress: batches, offsets, watermark, published model version."""
        return loop.trainer.state_summary()

    return app
