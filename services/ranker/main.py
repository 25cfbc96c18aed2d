"""Ranker process entry point."""

from __future__ import annotations

import logging

from freshrec.api import serve
from services.ranker.app import create_app
from services.ranker.settings import RankerSettings

__all__ = ["main"]


def main(settings: RankerSettings | None = None) -> None:
    """Serve the ranker until interrupted."""
    settings = settings or RankerSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(
        create_app(settings),
        host=settings.ranker_host,
        port=settings.ranker_port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
