"""Ingest process entry point (`freshrec ingest`, or `python -m services.ingest.main`)."""

from __future__ import annotations

from freshrec.api import run_service
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings

__all__ = ["main"]


def main(settings: IngestSettings | None = None) -> None:
    """Serve the ingest API until interrupted; pending messages are flushed on the way out."""
    settings = settings or IngestSettings()
    run_service(
        create_app,
        settings,
        host=settings.ingest_host,
        port=settings.ingest_port,
        # longer than the produce timeout: a batch awaiting Kafka gets its answer
        timeout_graceful_shutdown=int(settings.produce_timeout_s) + 2,
    )


if __name__ == "__main__":
    main()
