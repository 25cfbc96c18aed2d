"""`freshrec infra ...`: the local Redis and Kafka of `deploy/local/servers.sh`."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from services.cli.paths import deploy_dir

__all__ = ["infra"]

infra = typer.Typer(help="Local Redis and Kafka on 127.0.0.1 (no Docker needed).")

Which = Annotated[str, typer.Argument(help="all, redis or kafka")]


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
