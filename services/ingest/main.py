"""Ingest process entry point (`freshrec ingest`, or `python -m services.ingest.main`)."""

from __future__ import annotations

import logging

from freshrec.api import serve
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings

__all__ = ["main"]


def main(settings: IngestSettings | None = None) -> None:
    """Serve the ingest API until interrupted; pending messages are flushed on the way out."""
    settings = settings or IngestSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_level="warning",
        access_log=False,
        # longer than the produce timeout: a batch awaiting Kafka gets its answer
        timeout_graceful_shutdown=int(settings.produce_timeout_s) + 2,
    )


if __name__ == "__main__":
    main()
