"""Ranker process entry point (`freshrec ranker`, or `python -m services.ranker.main`)."""

from __future__ import annotations

from freshrec.api import run_service
from services.ranker.app import create_app
from services.ranker.settings import RankerSettings

__all__ = ["main"]


def main(settings: RankerSettings | None = None) -> None:
    """Serve the ranker until interrupted."""
    settings = settings or RankerSettings()
    run_service(create_app, settings, host=settings.ranker_host, port=settings.ranker_port)


if __name__ == "__main__":
    main()
