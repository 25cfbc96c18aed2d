"""The `freshrec` command: one subcommand per process, plus the local servers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "deploy_dir"]

app = typer.Typer(
    help="freshrec: real-time recommendations with online training.",
    no_args_is_help=True,
    add_completion=False,
)
infra = typer.Typer(help="Local Redis and Kafka on 127.0.0.1 (no Docker needed).")
app.add_typer(infra, name="infra")

Which = Annotated[str, typer.Argument(help="all, redis or kafka")]


def deploy_dir() -> Path:
    """`deploy/local` of the checkout this package is installed from (`FRESHREC_DEPLOY_DIR`)."""
    configured = os.environ.get("FRESHREC_DEPLOY_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "deploy" / "local"


def _servers(action: str, which: str) -> None:
    script = deploy_dir() / "servers.sh"
    if not script.is_file():
        typer.echo(f"{script} not found; set FRESHREC_DEPLOY_DIR to deploy/local", err=True)
        raise typer.Exit(2)
    args = ["bash", str(script), action] + ([] if which == "all" else [which])
    raise typer.Exit(subprocess.call(args))


@infra.command()
def up(which: Which = "all") -> None:
    """Start Redis and Kafka (idempotent; waits until each answers)."""
    _servers("up", which)


@infra.command()
def down(which: Which = "all") -> None:
    """Stop the servers `up` started."""
    _servers("down", which)


@infra.command()
def status() -> None:
    """Show whether each server answers."""
    _servers("status", "all")


stack = typer.Typer(help="The three freshrec services as local background processes.")
app.add_typer(stack, name="stack")


@app.command()
def ingest() -> None:
    """Run the ingest service (HTTP → Kafka) in the foreground."""
    from services.ingest.main import main  # noqa: PLC0415 - heavy imports only when used

    main()


@app.command()
def trainer() -> None:
    """Run the online trainer (Kafka → Redis table) in the foreground."""
    from services.trainer.main import main  # noqa: PLC0415

    main()


@app.command()
def ranker() -> None:
    """Run the ranking service (HTTP recommendations) in the foreground."""
    from services.ranker.main import main  # noqa: PLC0415

    main()


@stack.command("up")
def stack_up(
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 180.0,
) -> None:
    """Start ingest, trainer and ranker in the background and wait until they are ready."""
    from freshrec.stack import run_dir, start_services  # noqa: PLC0415

    try:
        urls = start_services(timeout_s=timeout_s)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for name, url in urls.items():
        typer.echo(f"{name:8s} {url}  (metrics {url}/metrics, log {run_dir() / name}.log)")


@stack.command("down")
def stack_down() -> None:
    """Stop the services `stack up` started."""
    from freshrec.stack import stop_services  # noqa: PLC0415

    for name in stop_services():
        typer.echo(f"{name} stopped")


@stack.command("status")
def stack_status() -> None:
    """Show whether each service is ready."""
    from freshrec.stack import service_status  # noqa: PLC0415

    for name, (ready, url) in service_status().items():
        typer.echo(f"{name:8s} {'ready' if ready else 'down ':5s} {url}")
