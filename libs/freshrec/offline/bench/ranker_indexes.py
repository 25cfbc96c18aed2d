"""The ranker's index choice: each index kind's cheapest setting at recall@100 ≥ 0.95, and
its cost per call at the batch sizes the ranker searches with.

`results/bench/ranker_indexes.json`: for each approximate kind the retriever has (IVF-flat,
HNSW-flat, split),
built with the product's `FaissRetriever` over a catalog (the trained one by default, as
the ranker bench seeds it), a sweep of its search parameter (`nprobe`, `ef_search`, set
with `FaissRetriever.tune` on one build): recall@100 of the index's top-100 against an exact
scan of the same catalog, and milliseconds per call of a top-500 search (the ranker's
candidates) in batches of 1, 2 and 3 queries (what the ranker's batcher forms at 300
req/s) and 32, one thread. `chosen` per kind is the cheapest setting reaching the target;
a kind none of whose settings reach it says so.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from freshrec.offline.bench.catalog import Catalog
from freshrec.offline.bench.ranker_costs import recall_at_k, search_costs
from freshrec.retrieval.config import HnswConfig, IvfConfig, SplitConfig
from freshrec.retrieval.faiss import FaissRetriever
from freshrec.retrieval.faiss.ivf import ivf_nlist

__all__ = ["DEFAULT_SWEEPS", "TARGET_RECALL", "compare_indexes"]

logger = logging.getLogger(__name__)

TARGET_RECALL = 0.95
_CANDIDATES = 500
_BATCHES = (1, 2, 3, 32)

DEFAULT_SWEEPS: dict[str, tuple[int, ...]] = {
    "ivf": (128, 160, 192, 208, 224, 256, 320),
    "hnsw": (500, 768, 1024, 1536),
    "split": (1, 2, 4, 8, 16, 32),
}
"""Search parameters tried per kind: IVF `nprobe` (of `ivf_nlist(N)` lists), HNSW
`ef_search` (at least the 500 candidates the ranker asks for, as the index enforces),
split's tail `nprobe` (its head of `SplitConfig.head_fraction` searched exactly)."""
_PARAM = {"ivf": "nprobe", "hnsw": "ef_search", "split": "nprobe"}


def _sweep(
    kind: str, catalog: Catalog, values: tuple[int, ...], progress: Progress
) -> dict[str, Any]:
    """Build one index of `kind` over the catalog and time each search parameter."""
    vectors, queries = catalog.items, catalog.queries
    n = vectors.shape[0]
    config: IvfConfig | HnswConfig | SplitConfig
    if kind == "ivf":
        config = IvfConfig(nlist=ivf_nlist(n), nprobe=values[0])
    elif kind == "split":
        config = SplitConfig(nprobe=values[0])
    else:
        config = HnswConfig(ef_search=values[0])
    task = progress.add_task(f"{kind}: building over {n:,} items", total=len(values) + 1)
    started = time.perf_counter()
    retriever = FaissRetriever(vectors.shape[1], config, name=f"bench-{kind}")
    retriever.replace(np.arange(n, dtype=np.uint64), vectors)
    build_s = time.perf_counter() - started
    progress.advance(task)
    rows: list[dict[str, Any]] = []
    for value in values:
        progress.update(task, description=f"{kind}: {value}")
        retriever.tune(**{_PARAM[kind]: value})
        recall = recall_at_k(retriever, vectors, queries, 100)
        costs = search_costs(retriever, vectors, queries, _CANDIDATES, batches=_BATCHES)
        rows.append({"param": value, "recall_at_100": round(recall, 4), "cost": costs})
        logger.info("%s %d: recall@100 %.4f, %s", kind, value, recall, costs)
        progress.advance(task)
    reaching = [row for row in rows if row["recall_at_100"] >= TARGET_RECALL]
    retriever.close()
    return {
        "config": config.model_dump(),
        "param_name": _PARAM[kind],
        "build_s": round(build_s, 1),
        "sweep": rows,
        "chosen": reaching[0] if reaching else None,
    }


def compare_indexes(
    catalog: Catalog,
    out: Path,
    sweeps: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """Each index kind's recall@100 and cost per call over `catalog`; writes
    `ranker_indexes.json` under `out`.

    Args:
        catalog: `(N, D)` items (indexed as ids `0..N-1`) and `(Q, D)` queries.
        out: output directory.
        sweeps: search parameters per kind (`ivf`, `hnsw`, `split`); `DEFAULT_SWEEPS` when
            None.

    Returns:
        The JSON document written: the exact scan's cost per call, and per kind its build
        time, sweep and `chosen` setting (None when no setting reaches `TARGET_RECALL`).
    """
    wanted = DEFAULT_SWEEPS if sweeps is None else sweeps
    result: dict[str, Any] = {
        "catalog": catalog.kind,
        "items": int(catalog.items.shape[0]),
        "queries": int(catalog.queries.shape[0]),
        "candidates": _CANDIDATES,
        "target_recall_at_100": TARGET_RECALL,
        "batches": list(_BATCHES),
        "exact": search_costs(None, catalog.items, catalog.queries, _CANDIDATES, batches=_BATCHES),
        "kinds": {},
    }
    with Progress(transient=True) as progress:
        for kind, values in wanted.items():
            if kind not in DEFAULT_SWEEPS:
                raise ValueError(f"unknown index kind {kind!r}; expected one of {sorted(_PARAM)}")
            result["kinds"][kind] = _sweep(kind, catalog, values, progress)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ranker_indexes.json").write_text(json.dumps(result, indent=2))
    return result
