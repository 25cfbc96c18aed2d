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
