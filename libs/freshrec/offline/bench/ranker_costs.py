"""Where a ranker request's time goes, and what the index costs per call.

Two measurements the ranker bench records beside its latency figures:

- `stage_breakdown`: the ranker's own `/metrics` read before and after a load phase. The
  delta of `freshrec_ranker_stage_duration_seconds` (user row, retrieval, candidate rows,
  scoring), of `freshrec_ranker_batch_requests` and of the recommend route's
  `freshrec_http_request_duration_seconds` gives each request's mean time per stage, the
  mean batch, the time between the route's middleware and the batch (the batcher's queue
  and the handler) and, against the load generator's mean latency, the time outside the
  route (socket buffers, uvicorn's parsing, the event loop's backlog). The process's CPU
  seconds give the ranker's share of a core.
- `search_costs`: an index's own search per call at the ranker's batch sizes (one to three
  queries under 300 req/s, up to `max_batch` under overload), one thread, best of passes;
  `recall_at_k` compares its top-k with an exact scan; `single_query_tail` gives the spread
  of one-query calls, the floor under the ranker's own p99.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from freshrec.retrieval.base import Retriever
from freshrec.retrieval.scan import top_inner_products
from freshrec.table.base import FloatArray

__all__ = [
    "STAGES",
    "parse_counters",
    "recall_at_k",
    "search_costs",
    "single_query_tail",
    "stage_breakdown",
]

STAGES = ("user_row", "retrieval", "rows", "scoring")
_STAGE = "freshrec_ranker_stage_duration_seconds"
_BATCH = "freshrec_ranker_batch_requests"
_HTTP = "freshrec_http_request_duration_seconds"
_CPU = "process_cpu_seconds_total"
# background work in the ranker while a phase runs: feed changes applied, models loaded
_BACKGROUND = {
    "freshrec_index_changes_total": "index_changes",
    "freshrec_ranker_model_reloads_total": "model_reloads",
}
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_counters(text: str) -> dict[str, float]:
    """The sums and counts the breakdown needs from a Prometheus text exposition.

    Args:
        text: the body of a `/metrics` answer.

    Returns:
        `{"<stage>_sum" / "<stage>_count": ...}` per stage of `STAGES`, `batch_sum`,
        `batch_count`, `http_sum`, `http_count` (the recommend route), `http_le_<bound>`
        (the route's cumulative histogram buckets), `cpu_s`, `index_changes` (item ids the
        index applied from the feed) and `model_reloads`; a series not exported yet reads 0.
    """
    out: dict[str, float] = dict.fromkeys(
        [f"{s}_{p}" for s in STAGES for p in ("sum", "count")]
        + ["batch_sum", "batch_count", "http_sum", "http_count", "cpu_s"]
        + list(_BACKGROUND.values()),
        0.0,
    )
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        for part in ("sum", "count"):
            if name == f"{_STAGE}_{part}":
                stage = re.search(r'stage="([^"]+)"', labels)
                if stage is not None and stage.group(1) in STAGES:
                    out[f"{stage.group(1)}_{part}"] = value
            elif name == f"{_BATCH}_{part}":
                out[f"batch_{part}"] = value
            elif name == f"{_HTTP}_{part}" and 'route="/v1/recommend"' in labels:
                out[f"http_{part}"] += value  # one series per method: only POST in practice
        if name == f"{_HTTP}_bucket" and 'route="/v1/recommend"' in labels:
            bound = re.search(r'le="([^"]+)"', labels)
            if bound is not None:
                key = f"http_le_{bound.group(1)}"
                out[key] = out.get(key, 0.0) + value
        if name == _CPU:
            out["cpu_s"] = value
        if name in _BACKGROUND:
            out[_BACKGROUND[name]] += value  # summed over labels
    return out


def stage_breakdown(
    before: Mapping[str, float],
    after: Mapping[str, float],
    client_mean_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """Mean milliseconds per request in each part of a recommendation, over one phase.

    Args:
        before: `parse_counters` at the start of the phase.
        after: `parse_counters` at its end.
        client_mean_s: the load generator's mean latency over the phase (scheduled send to
            answer read).
        wall_s: the phase's wall-clock length (for the ranker's CPU share).

    Returns:
        `requests`, `mean_batch`, `<stage>_ms` per stage, `in_route_ms` (the route's
        middleware to response), `batcher_and_handler_ms` (in the route, outside the
        stages), `in_route_p99_at_most_ms` (the bound of the route's histogram bucket
        holding its 99th percentile: the server's own tail, to set against the client's
        p99), `outside_route_ms` (client latency not spent in the route), `client_ms`,
        `ranker_cpu_cores`, and the background work done meanwhile: `index_changes` and
        `model_reloads`.
    """
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    requests = delta["http_count"]
    if requests <= 0:
        return {"requests": 0}
    stages = {
        f"{s}_ms": round(1e3 * delta[f"{s}_sum"] / max(delta[f"{s}_count"], 1.0), 3) for s in STAGES
    }
    in_route = 1e3 * delta["http_sum"] / requests
    return {
        "requests": int(requests),
        "mean_batch": round(delta["batch_sum"] / max(delta["batch_count"], 1.0), 2),
        **stages,
        "in_route_ms": round(in_route, 3),
        "batcher_and_handler_ms": round(in_route - sum(stages.values()), 3),
        "in_route_p99_at_most_ms": _bucket_quantile(delta, 0.99),
        "outside_route_ms": round(1e3 * client_mean_s - in_route, 3),
        "client_ms": round(1e3 * client_mean_s, 3),
        "ranker_cpu_cores": round(delta["cpu_s"] / wall_s, 3) if wall_s > 0 else None,
        "index_changes": int(delta["index_changes"]),
        "model_reloads": int(delta["model_reloads"]),
    }


def _bucket_quantile(delta: Mapping[str, float], q: float) -> float | None:
    """The smallest bucket bound (ms) of the route's histogram delta holding quantile `q`."""
    bounds = sorted(
        (float(key.removeprefix("http_le_")), count)
        for key, count in delta.items()
        if key.startswith("http_le_")
    )
    total = delta.get("http_count", 0.0)
    for bound, count in bounds:
        if total > 0 and count >= q * total:
            return round(bound * 1e3, 3) if np.isfinite(bound) else None
    return None


def search_costs(
    retriever: Retriever | None,
    vectors: FloatArray,
    queries: FloatArray,
    candidates: int,
    *,
    batches: Sequence[int] = (1, 2, 3, 32),
    passes: int = 3,
) -> dict[str, dict[str, float]]:
    """Milliseconds per call and per query of top-`candidates` searches, by batch size.

    Args:
        retriever: the index to time; None times the exact scan of `vectors` the ranker
            would do (`top_inner_products`).
        vectors: `(N, D)` the catalog (used only when `retriever` is None).
        queries: `(Q, D)` queries; each batch size searches all of them in chunks.
        candidates: k of each search.
        batches: batch sizes to time.
        passes: timed passes per batch size; the best is kept.

    Returns:
        `{"<batch>": {"ms_per_call": ..., "ms_per_query": ...}}`.
    """
    out: dict[str, dict[str, float]] = {}
    with threadpool_limits(limits=1):
        for batch in batches:
            chunks = [queries[s : s + batch] for s in range(0, queries.shape[0], batch)]
            best = float("inf")
            for _ in range(passes):
                started = time.perf_counter()
                for chunk in chunks:
                    if retriever is None:
                        top_inner_products(chunk, vectors, candidates)
                    else:
                        retriever.search(chunk, candidates)
                best = min(best, time.perf_counter() - started)
            out[str(batch)] = {
                "ms_per_call": round(1e3 * best / len(chunks), 4),
                "ms_per_query": round(1e3 * best / queries.shape[0], 4),
            }
    return out


def single_query_tail(
    retriever: Retriever, queries: FloatArray, candidates: int, *, calls: int = 2000
) -> dict[str, float]:
    """The spread of one-query searches, one thread, as a lightly loaded ranker makes them.

    The ranker's p99 cannot be lower than its stages' own tails; this measures the index's,
    with nothing else in the process, so that a ranker p99 far above the mean request cost
    can be told apart from queueing.

    Args:
        retriever: the index to time.
        queries: `(Q, D)` queries, searched one at a time in turn.
        candidates: k of each search.
        calls: searches timed.

    Returns:
        `p50_ms`, `p99_ms` and `max_ms` of one call.
    """
    took = np.empty(calls)
    with threadpool_limits(limits=1):
        for i in range(calls):
            row = i % queries.shape[0]
            started = time.perf_counter()
            retriever.search(queries[row : row + 1], candidates)
            took[i] = time.perf_counter() - started
    p50, p99 = np.percentile(took, [50, 99]) * 1e3
    return {
        "p50_ms": round(float(p50), 3),
        "p99_ms": round(float(p99), 3),
        "max_ms": round(float(took.max()) * 1e3, 3),
    }


def recall_at_k(retriever: Retriever, vectors: FloatArray, queries: FloatArray, k: int) -> float:
    """Mean share of each query's exact top-`k` (inner product over `vectors`) that the
    retriever's top-`k` holds; the retriever must hold `vectors` under ids `0..N-1`.

    Args:
        retriever: the index, holding row `i` of `vectors` as id `i`.
        vectors: `(N, D)` the catalog.
        queries: `(Q, D)` queries.
        k: the cut-off.

    Returns:
        Recall@k in [0, 1].
    """
    with threadpool_limits(limits=1):
        exact, _ = top_inner_products(queries, vectors, k)
        found = retriever.search(queries, k).ids.astype(np.int64)
    hits = sum(len(np.intersect1d(exact[i], found[i])) for i in range(queries.shape[0]))
    return hits / float(k * queries.shape[0])
