"""`freshrec bench ...`: each benchmark of `freshrec.offline.bench`, with its figures printed."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks: print figures and write JSON under --out.")

BenchOut = Annotated[Path, typer.Option(help="Directory the JSON files go to.")]


def _endpoints() -> tuple[str, str]:
    from freshrec.settings import CommonSettings  # noqa: PLC0415

    settings = CommonSettings()
    return settings.redis_url, settings.kafka_bootstrap


def _show(name: str, result: object) -> None:
    typer.echo(f"== {name}\n{json.dumps(result, indent=2)}")


@bench_app.command("table")
def bench_table(
    out: BenchOut = Path("results/bench"),
    rows: Annotated[
        int,
        typer.Option(
            help="Largest table size; above 200,000 it is measured beside 200,000 (dim 16 only)."
        ),
    ] = 200_000,
    seconds: Annotated[float, typer.Option(help="Time per timed phase.")] = 2.0,
) -> None:
    """Both table layouts against raw MGET/SET at batch 4096 on a private Redis (table.json)."""
    from freshrec.offline.bench.table import DIMS, ROWS, run_table_bench  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    dims = DIMS if rows <= ROWS else (16,)
    _show("table", run_table_bench(out, rows=rows, seconds=seconds, dims=dims))


@bench_app.command("retrieval")
def bench_retrieval(
    out: BenchOut = Path("results/bench"),
    catalog: Annotated[
        str,
        typer.Option(
            help="trained, gaussian or clustered: compare exact and IVF at 100,000 and "
            "--items items (the Gaussian catalog runs alongside). Empty: the short 100k run."
        ),
    ] = "",
    items: Annotated[
        int, typer.Option(help="Catalog size of the --catalog run (--churn: 100,000 default).")
    ] = 1_000_000,
    *,
    churn: Annotated[
        bool,
        typer.Option(help="Recall@100 every 5 s of an IVF index following a churning table."),
    ] = False,
    minutes: Annotated[float, typer.Option(help="Length of the --churn run.")] = 3.0,
    nprobe: Annotated[int, typer.Option(help="The --churn index's nprobe.")] = 128,
    shift: Annotated[
        float,
        typer.Option(help="--churn: upserted items move this many mean item norms (0: in place)."),
    ] = 0.0,
) -> None:
    """Recall@100 and queries/s of the FAISS indexes (retrieval.json; --churn: churn.json)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    if churn:
        from freshrec.offline.bench.churn import run_churn_bench  # noqa: PLC0415

        size = items if catalog else 100_000
        result = run_churn_bench(
            _endpoints()[0], out, minutes=minutes, items=size, nprobe=nprobe, shift=shift
        )
        _show("churn", result)
        return
    if catalog:
        from freshrec.offline.bench.retrieval_scale import run_scale_bench  # noqa: PLC0415

        _show("retrieval", run_scale_bench(out, catalog, items))
        return
    from freshrec.offline.bench.retrieval import run_retrieval_bench  # noqa: PLC0415

    _show("retrieval", run_retrieval_bench(out))


@bench_app.command("trainer")
def bench_trainer(
    out: BenchOut = Path("results/bench"),
    ids: Annotated[
        int,
        typer.Option(help="Distinct ids of the largest stream; above 100,000 measured beside it."),
    ] = 100_000,
    events: Annotated[int, typer.Option(help="Events per stream.")] = 100_000,
) -> None:
    """Kafka → Redis events/s by distinct ids vs raw consume, lag at 5,000/s (trainer.json)."""
    from freshrec.offline.bench.trainer import run_trainer_bench  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    _show("trainer", run_trainer_bench(_endpoints()[1], out, events=events, ids=ids))


@bench_app.command("ranker")
def bench_ranker(
    out: BenchOut = Path("results/bench"),
    index_kind: Annotated[
        str,
        typer.Option(
            "--index-kind",
            "--index",
            help="flat (exact, ranker.json) or ivf/hnsw/split (ranker_<kind>.json).",
        ),
    ] = "flat",
    items: Annotated[int, typer.Option(help="Items in the ranker's index.")] = 100_000,
    nprobe: Annotated[int, typer.Option(help="The ivf index's nprobe (0: its default).")] = 0,
    catalog: Annotated[
        str, typer.Option(help="Item rows seeded: random (the worst case) or trained.")
    ] = "random",
) -> None:
    """Recommend latency/throughput and end-to-end freshness (ranker.json, freshness.json)."""
    from pydantic import TypeAdapter  # noqa: PLC0415

    from freshrec.retrieval.config import RetrieverConfig  # noqa: PLC0415
    from services.cli.bench_ranker import ranker_bench  # noqa: PLC0415

    knobs = {"type": index_kind, **({"nprobe": nprobe} if nprobe else {})}
    index = TypeAdapter(RetrieverConfig).validate_python(knobs)
    _show("ranker", ranker_bench(*_endpoints(), out, index, items=items, catalog=catalog))


@bench_app.command("soak")
def bench_soak(
    out: BenchOut = Path("results/bench"),
    minutes: Annotated[float, typer.Option(help="How long the load runs.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Seeds the fault schedule.")] = 0,
) -> None:
    """Steady load with a random fault every 30 to 60 s on servers of its own (soak.json)."""
    from services.cli.bench_soak import soak_bench  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    _show("soak", soak_bench(out, minutes, seed))


@bench_app.command("cluster")
def bench_cluster(
    out: BenchOut = Path("results/bench"),
    nodes: Annotated[
        str,
        typer.Option(help="Redis Cluster startup nodes; default FRESHREC_REDIS_CLUSTER_NODES."),
    ] = "",
    brokers: Annotated[
        str, typer.Option(help="The multi-broker Kafka's bootstrap servers.")
    ] = "127.0.0.1:9192,127.0.0.1:9194,127.0.0.1:9196",
    events: Annotated[int, typer.Option(help="Events per trainer-count phase.")] = 60_000,
) -> None:
    """The Redis Cluster table against raw per-node MGET/SET, lost updates, CPU per event
    with 1-3 table writers and 1-3 trainer processes (cluster.json); needs
    `make up FRESHREC_TOPOLOGY=cluster` and the single-node servers."""
    from freshrec.offline.bench.cluster import run_cluster_bench  # noqa: PLC0415
    from freshrec.offline.bench.trainers import TrainerScaling  # noqa: PLC0415
    from freshrec.settings import CommonSettings  # noqa: PLC0415
    from services.cli.ports import free_port  # noqa: PLC0415

    settings = CommonSettings()
    where = nodes or settings.redis_cluster_nodes or "127.0.0.1:7000"
    scaling = TrainerScaling([sys.executable, "-m", "services.trainer"], free_port, events)
    phase = (scaling, brokers, settings.kafka_bootstrap)
    _show("cluster", run_cluster_bench(where, settings.redis_url, out, phase))


@bench_app.command("all")
def bench_all(
    out: BenchOut = Path("results/bench"),
    large: Annotated[
        bool, typer.Option(help="The large sizes too: 10M rows and ids, 1M items, churn.")
    ] = False,
) -> None:
    """Every benchmark at its default size; --large: docs/performance.md's sizes, churn too."""
    bench_table(out, rows=10_000_000 if large else 200_000)
    if large:
        bench_retrieval(out, catalog="trained", items=1_000_000)
        bench_retrieval(out, churn=True)
    else:
        bench_retrieval(out)
    bench_trainer(out, ids=10_000_000 if large else 100_000)
    bench_ranker(out)
    kind, catalog, items = ("split", "trained", 1_000_000) if large else ("ivf", "random", 100_000)
    bench_ranker(out, index_kind=kind, items=items, catalog=catalog)
