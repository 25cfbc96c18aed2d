"""`freshrec bench ranker-indexes`: the ranker's index choice (ranker_indexes.json)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["bench_ranker_indexes"]


def _values(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def bench_ranker_indexes(
    out: Annotated[Path, typer.Option(help="Directory the JSON files go to.")] = Path(
        "results/bench"
    ),
    *,
    items: Annotated[int, typer.Option(help="Catalog size.")] = 1_000_000,
    catalog: Annotated[
        str, typer.Option(help="Item rows: trained or random, as the ranker bench seeds them.")
    ] = "trained",
    nprobe: Annotated[str, typer.Option(help="IVF nprobe values, comma-separated.")] = "",
    ef_search: Annotated[
        str, typer.Option(help="HNSW ef_search values, comma-separated ('none': skip HNSW).")
    ] = "",
    split_nprobe: Annotated[
        str, typer.Option(help="Split tail nprobe values, comma-separated ('none': skip).")
    ] = "",
) -> None:
    """Each index kind's cheapest setting at recall@100 >= 0.95 and its cost per call at
    batches of 1-3 (ranker_indexes.json)."""
    from freshrec.offline.bench.ranker import ranker_catalog  # noqa: PLC0415
    from freshrec.offline.bench.ranker_indexes import (  # noqa: PLC0415
        DEFAULT_SWEEPS,
        compare_indexes,
    )
    from freshrec.settings import default_table_config_path  # noqa: PLC0415
    from freshrec.table import load_tables  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    sweeps = {"ivf": _values(nprobe) or DEFAULT_SWEEPS["ivf"]}
    for kind, text in (("hnsw", ef_search), ("split", split_nprobe)):
        if text != "none":
            sweeps[kind] = _values(text) or DEFAULT_SWEEPS[kind]
    dim = load_tables(default_table_config_path())["item"].dim
    result = compare_indexes(ranker_catalog(catalog, items, dim), out, sweeps)
    typer.echo(f"== ranker-indexes\n{json.dumps(result, indent=2)}")
