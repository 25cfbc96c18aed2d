"""`freshrec ingest|trainer|ranker` in the foreground and `freshrec stack ...` in the background."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["ingest", "ranker", "stack_app", "start_or_exit", "trainer"]

stack_app = typer.Typer(help="The three freshrec services as local background processes.")


def ingest() -> None:
    """Run the ingest service (HTTP → Kafka) in the foreground."""
    from services.ingest.main import main  # noqa: PLC0415 - heavy imports only when used

    main()


def trainer() -> None:
    """Run the online trainer (Kafka → Redis table) in the foreground."""
    from services.trainer.main import main  # noqa: PLC0415

    main()


def ranker() -> None:
    """Run the ranking service (HTTP recommendations) in the foreground."""
    from services.ranker.main import main  # noqa: PLC0415

    main()


def start_or_exit(timeout_s: float) -> dict[str, str]:
    """Start the stack and return its URLs, or print why it did not start and exit 1."""
    from services.cli.stack import start_services  # noqa: PLC0415

    try:
        return start_services(timeout_s=timeout_s)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@stack_app.command("up")
def stack_up(
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 180.0,
) -> None:
    """Start ingest, trainer and ranker in the background and wait until they are ready."""
    from services.cli.stack import run_dir  # noqa: PLC0415

    urls = start_or_exit(timeout_s)
    for name, url in urls.items():
        typer.echo(f"{name:8s} {url}  (metrics {url}/metrics, log {run_dir() / name}.log)")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services `stack up` started."""
    from services.cli.stack import stop_services  # noqa: PLC0415

    for name in stop_services():
        typer.echo(f"{name} stopped")


@stack_app.command("status")
def stack_status() -> None:
    """Show whether each service is ready, and how often the supervisor restarted it."""
    from services.cli.stack import restart_counts, service_status  # noqa: PLC0415

    restarts = restart_counts()
    for name, (ready, url) in service_status().items():
        state = "ready" if ready else "down "
        typer.echo(f"{name:8s} {state:5s} {url}  restarts: {restarts.get(name, 0)}")
