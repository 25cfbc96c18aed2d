"""The `freshrec` command's root: one subcommand per process, plus the local servers."""

from __future__ import annotations

import typer

from services.cli.bench import bench_app
from services.cli.bench_indexes import bench_ranker_indexes
from services.cli.config_docs import config_docs
from services.cli.data import data_app
from services.cli.evaluate import eval_command, eval_live_command
from services.cli.infra import infra
from services.cli.processes import ingest, ranker, stack_app, trainer
from services.cli.run import run_main_job

__all__ = ["app"]

app = typer.Typer(
    help="freshrec: real-time recommendations with online training.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(infra, name="infra")
app.add_typer(data_app, name="data")
app.command("eval")(eval_command)
app.command("eval-live")(eval_live_command)
app.add_typer(stack_app, name="stack")
app.command()(ingest)
app.command()(trainer)
app.command()(ranker)
app.command("config-docs")(config_docs)
app.command("run")(run_main_job)
bench_app.command("ranker-indexes")(bench_ranker_indexes)
app.add_typer(bench_app, name="bench")
