"""`run_eval`: every method, every sweep, one stream, one seed; results written to a folder.

Runs (each a full replay through the product's `OnlineTrainer`):

1. the main run on collisionless tables, scored by `online`, `stale_*`, `frozen` and
   `popularity` (they share its trainer: staleness and freezing are serving-side);
2. the `hashing` run: the user and item tables wrapped in `HashingTrickStore` with as many
   buckets as the main run ended with rows (times `hashing_memory_ratio`);
3. one run per sweep setting (admission `min_count`, event-time expiry) on the user and item
   tables, with the sweeps' own batch span limit (`EvalConfig.sweep_max_batch_span_s`);
   settings with equal tables share one run, and a setting equal to the main run's tables
   reuses the main run when the sweeps' batches are the main run's.

With `workers > 1` the sweep runs go to spawned worker processes while this process replays
the main and hashing runs; every run is deterministic on its own, so the figures are the
same. See `docs/evaluation.md`.

This module runs the stages; `sweeps.py` lists and replays the sweep settings, `stores.py`
opens each run's tables, `prequential.py` replays one run, `summary.py` describes it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from freshrec.errors import ConfigError
from freshrec.offline.evaluation.config import EvalConfig
from freshrec.offline.evaluation.metrics import paired_difference, summarise
from freshrec.offline.evaluation.peers import als_unavailable
from freshrec.offline.evaluation.prequential import RunResult, ServingPlan, replay_run
from freshrec.offline.evaluation.report import write_plots, write_summary_md
from freshrec.offline.evaluation.stores import RunStores, StoreKind
from freshrec.offline.evaluation.stream import EvalStream, Queries, plan_batches, prepare_stream
from freshrec.offline.evaluation.summary import collision_summary, iso_time, run_meta, table_rows
from freshrec.offline.evaluation.sweeps import (
    SWEPT_TABLES,
    SweepSetting,
    SweepTask,
    run_sweep,
    seeded,
    sweep_settings,
)
from freshrec.settings import default_table_config_path
from freshrec.table import HashingTrickStore, TablesConfig, load_tables
from freshrec.training.trainer import TrainerConfig

__all__ = ["EventSource", "StoreKind", "run_eval"]

logger = logging.getLogger(__name__)

EventSource = Iterable[Mapping[str, Any]]
"""Event dicts in the wire format of `POST /v1/events`, in event-time order."""

REQUIRED_TABLES = ("user", "item", "context")
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def _load_movielens_events(user_context: bool) -> tuple[str, EventSource]:
    from freshrec.offline.data.movielens import load_movielens, movielens_events  # noqa: PLC0415

    ml = load_movielens()
    return "MovieLens-100K (recbole 1.2.1 wheel)", movielens_events(ml, user_context=user_context)


class _Progress:
    def __init__(self, enabled: bool, total: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("evaluating", total=total)

    def __enter__(self) -> _Progress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def advance(self, events: int) -> None:
        self._progress.advance(self._task, events)

    def run(self, name: str) -> Callable[[int], None]:
        self._progress.update(self._task, description=name)

        def advance(events: int) -> None:
            self._progress.advance(self._task, events)

        return advance


def run_eval(
    out: Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    store: StoreKind = "memory",
    redis_url: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    events: EventSource | None = None,
    tables: TablesConfig | None = None,
    config: EvalConfig | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Run the prequential evaluation and write `summary.json`, `summary.md` and plots.

    Args:
        out: output folder (created).
        limit: replay only the first `limit` events.
        seed: seeds the dense model, shifts every table initializer's seed, salts the
            ranking-query sample. The same seed gives the same figures.
        store: `memory` (in-process tables) or `redis` (tables in Redis under a scratch
            namespace, removed afterwards).
        redis_url: Redis to use with `store="redis"`.
        batch_size: events per micro-batch, at most (None: `config.batch_size`, 16 by
            default).
        progress: show a progress bar on stderr.
        events: the event stream; MovieLens-100K ratings (downloaded once) when None.
        tables: table definitions; the shipped `tables.yaml` when None.
        config: everything else; `EvalConfig()` when None.
        workers: processes to use. With more than one, the sweep replays run in
            `workers - 1` spawned processes while this one replays the main and hashing
            runs; the figures do not change. (A script calling this with `workers > 1`
            needs the usual ``if __name__ == "__main__":`` guard of `multiprocessing`.)

    Returns:
        The summary that `summary.json` holds.

    Raises:
        ConfigError: a bad setting or table config.
        InvalidInput: an invalid or unordered event stream.
        StoreUnavailable: Redis does not answer.
    """
    started = time.perf_counter()
    config = config or EvalConfig()
    if batch_size is not None:
        config = replace(config, batch_size=batch_size)
    base = seeded(tables or load_tables(default_table_config_path()), seed)
    missing = set(REQUIRED_TABLES) - {t.name for t in base.tables}
    if missing:
        raise ConfigError(f"the evaluation needs tables {sorted(missing)}")
    if limit is not None and limit < 1:
        raise ConfigError("limit must be >= 1")
    if workers < 1:
        raise ConfigError("workers must be >= 1")
    if events is None:
        data, source = _load_movielens_events(config.user_context)
    else:
        data, source = "events given by the caller", events
    if limit is not None:
        source = itertools.islice(source, limit)
    trainer_config = config.trainer.model_copy(
        update={"group": "freshrec-eval", "model": replace(config.trainer.model, seed=seed)}
    )
    threads = torch.get_num_threads()
    # One thread: identical float reductions on every run, and no oversubscribed cores.
    torch.set_num_threads(1)
    stores = RunStores(store, redis_url)
    try:
        stream = prepare_stream(
            source,
            examples=trainer_config.examples,
            windows=config.windows,
            rank_sample=config.rank_sample,
            seed=seed,
        )
        first, last = float(stream.event_time[0]), float(stream.event_time[-1])
        frozen_at = first + config.frozen_fraction * (last - first)
        batches = plan_batches(
            stream.event_time, config.batch_size, config.max_batch_span_s, cuts=[frozen_at]
        )
        # The sweeps keep the frozen cut too, so equal span limits give equal batches.
        sweep_batches = plan_batches(
            stream.event_time,
            config.batch_size,
            config.sweep_max_batch_span_s,
            cuts=[frozen_at],
        )
        settings = sweep_settings(base, config)
        share_base = sweep_batches == batches
        distinct: dict[str, SweepSetting] = {}
        for s in settings:
            if share_base and s.tables == base:
                continue
            if not any(d.tables == s.tables for d in distinct.values()):
                distinct[s.label] = s
        with _Progress(progress, stream.n_events * (2 + len(distinct))) as bar:
            result = _evaluate(
                _Run(
                    stream=stream,
                    base=base,
                    config=config,
                    trainer_config=trainer_config,
                    batches=batches,
                    sweep_batches=sweep_batches,
                    frozen_at=frozen_at,
                    stores=stores,
                    bar=bar,
                    settings=settings,
                    distinct=distinct,
                ),
                workers=workers,
            )
    finally:
        torch.set_num_threads(threads)
        stores.close()
    summary: dict[str, Any] = {
        "meta": run_meta(
            data=data,
            stream=stream,
            config=config,
            tables=base,
            batches=batches,
            sweep_batches=sweep_batches,
            frozen_at=frozen_at,
            seed=seed,
            store=store,
        ),
        **result,
    }
    summary["timing"]["wall_time_s"] = round(time.perf_counter() - started, 3)
    out.mkdir(parents=True, exist_ok=True)
    summary["meta"]["plots"] = write_plots(summary, out)
    (out / SUMMARY_JSON).write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    write_summary_md(summary, out / SUMMARY_MD)
    logger.info("evaluation written to %s in %.1f s", out, summary["timing"]["wall_time_s"])
    return summary


@dataclass(frozen=True)
class _Run:
    """What every stage of one evaluation shares."""

    stream: EvalStream
    base: TablesConfig
    config: EvalConfig
    trainer_config: TrainerConfig
    batches: list[tuple[int, int]]
    sweep_batches: list[tuple[int, int]]
    frozen_at: float
    stores: RunStores
    bar: _Progress
    settings: list[SweepSetting]
    distinct: Mapping[str, SweepSetting]


def _evaluate(run: _Run, *, workers: int) -> dict[str, Any]:
    stream, config, trainer_config, stores, bar = (
        run.stream, run.config, run.trainer_config, run.stores, run.bar
    )  # fmt: skip
    query_window = stream.ex_window[stream.queries.example]

    def summary_of(
        result: RunResult, name: str, ranking: bool, probabilistic: bool = True
    ) -> dict[str, Any]:
        return summarise(
            result.scores[name],
            stream.ex_label,
            example_window=stream.ex_window,
            query_window=query_window,
            windows=config.windows,
            k=config.k,
            ranking=ranking,
            probabilistic=probabilistic,
        )

    # Sweep replays need no ranking queries: ship them a lighter stream.
    light = replace(
        stream,
        queries=Queries(
            example=np.zeros(0, dtype=np.int64),
            available=np.zeros(0, dtype=np.int64),
            target=np.zeros(0, dtype=np.int64),
            history=[],
        ),
    )
    tasks = [
        SweepTask(
            label=label,
            tables=setting.tables,
            stream=light,
            trainer_config=trainer_config,
            batches=run.sweep_batches,
            plan=ServingPlan(
                live=label,
                ranking=False,
                k=config.k,
                trainer_auc_window=config.trainer_auc_window,
            ),
            store=stores.kind,
            redis_url=stores.redis_url,
            prefix=stores.prefix,
        )
        for label, setting in run.distinct.items()
    ]
    with contextlib.ExitStack() as stack:
        futures: dict[str, Future[RunResult]] = {}
        if workers > 1 and tasks:
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    max_workers=min(workers - 1, len(tasks)),
                    mp_context=multiprocessing.get_context("spawn"),
                )
            )
            for task in tasks:
                futures[task.label] = pool.submit(run_sweep, task)
                futures[task.label].add_done_callback(lambda _: bar.advance(stream.n_events))
        return _collect(run, tasks=tasks, futures=futures, summary_of=summary_of)


def _collect(
    run: _Run,
    *,
    tasks: list[SweepTask],
    futures: Mapping[str, Future[RunResult]],
    summary_of: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    stream, base, config, trainer_config, stores, bar = (
        run.stream, run.base, run.config, run.trainer_config, run.stores, run.bar
    )  # fmt: skip
    batches, sweep_batches, frozen_at = run.batches, run.sweep_batches, run.frozen_at
    timing: dict[str, float] = {}
    als_missing = als_unavailable() if config.peers else None
    if als_missing is not None:
        logger.warning("the ALS peer is skipped: %s", als_missing)
    main_plan = ServingPlan(
        live="online",
        staleness=config.staleness,
        frozen="frozen",
        frozen_at=frozen_at,
        popularity="popularity",
        popularity_prior=config.popularity_prior,
        ranking=True,
        k=config.k,
        trainer_auc_window=config.trainer_auc_window,
        cooccurrence="cooccurrence" if config.peers else None,
        als="als" if config.peers and als_missing is None else None,
        als_config=config.als,
        cooccurrence_recent=config.cooccurrence_recent,
        seed=trainer_config.model.seed,
        variants=(("online_retrieval", "retrieval"), ("online_no_user", "no_user")),
        like_weight=config.like_weight,
        candidates=config.candidates,
    )
    with stores.open("online", base) as tables:
        main = replay_run(
            stream,
            tables,
            trainer_config=trainer_config,
            batches=batches,
            plan=main_plan,
            on_batch=bar.run("online"),
        )
    timing["online"] = round(main.seconds, 3)
    methods: dict[str, dict[str, Any]] = {}
    methods["online"] = {
        **summary_of(main, "online", True),
        **table_rows(main),
    }

    buckets = {
        name: max(1, round(config.hashing_memory_ratio * main.rows[name])) for name in SWEPT_TABLES
    }
    with stores.open("hashing", base, buckets) as tables:
        hashing = replay_run(
            stream,
            tables,
            trainer_config=trainer_config,
            batches=batches,
            plan=ServingPlan(
                live="hashing",
                ranking=True,
                k=config.k,
                trainer_auc_window=config.trainer_auc_window,
                like_weight=config.like_weight,
                candidates=config.candidates,
            ),
            on_batch=bar.run("hashing"),
        )
        stats = {
            store.config.name: store.collision_stats()
            for store in tables
            if isinstance(store, HashingTrickStore)
        }
    timing["hashing"] = round(hashing.seconds, 3)
    methods["hashing"] = {
        **summary_of(hashing, "hashing", True),
        **table_rows(hashing),
        "buckets": buckets,
        **collision_summary(stats),
    }
    methods["online_retrieval"] = summary_of(main, "online_retrieval", True, False)
    methods["online_no_user"] = summary_of(main, "online_no_user", True)
    methods["frozen"] = {**summary_of(main, "frozen", True), "frozen_at": iso_time(frozen_at)}
    for name, interval in config.staleness:
        methods[name] = {**summary_of(main, name, True), "sync_interval_s": interval}
    methods["popularity"] = summary_of(main, "popularity", True)
    notes: dict[str, str] = {}
    if config.peers:
        methods["cooccurrence"] = summary_of(main, "cooccurrence", True, False)
        if als_missing is None:
            methods["als"] = {**summary_of(main, "als", True, False), "refits": main.als_fits}
        else:
            notes["als"] = f"not run: {als_missing}"
    _compare(methods, main=main, hashing=hashing, stream=stream, frozen_at=frozen_at, k=config.k)

    runs: dict[str, RunResult] = {}
    for task in tasks:
        if task.label in futures:
            bar.run("sweeps (worker processes)")
            runs[task.label] = futures[task.label].result()
        else:
            runs[task.label] = run_sweep(task, bar.run(task.label))
        timing[task.label] = round(runs[task.label].seconds, 3)

    sweeps: dict[str, list[dict[str, Any]]] = {"admission": [], "expiry": []}
    for setting in run.settings:
        shared: str | None
        if sweep_batches == batches and setting.tables == base:
            result, name, shared = main, "online", "online"
        else:
            label = next(k for k, d in run.distinct.items() if d.tables == setting.tables)
            result, name = runs[label], label
            shared = None if label == setting.label else label
        metrics = summary_of(result, name, False)
        entry: dict[str, Any] = {"setting": setting.label}
        if setting.sweep == "admission":
            entry["min_count"] = int(setting.value or 0)
        else:
            entry["expire_after_days"] = setting.value
        entry.update(
            {
                "auc": metrics["auc"],
                "logloss": metrics["logloss"],
                **table_rows(result),
                "windows": metrics["windows"],
                "shared_with": shared,
            }
        )
        sweeps[setting.sweep].append(entry)
    return {
        "methods": methods,
        "notes": notes,
        "sweeps": sweeps,
        "timing": {"runs_s": timing},
    }


def _compare(
    methods: dict[str, dict[str, Any]],
    *,
    main: RunResult,
    hashing: RunResult,
    stream: EvalStream,
    frozen_at: float,
    k: int,
) -> None:
    """Add to each method its paired Recall@k difference to `online` (with its standard
    error) and its Recall@k / NDCG@k on the second half of the stream (queries at or after
    `frozen_at`, the half the hyperparameters were not chosen on)."""
    recall_key, ndcg_key = f"recall_at_{k}", f"ndcg_at_{k}"
    query_time = stream.ex_time[stream.queries.example]
    second = query_time >= frozen_at
    reference = main.scores["online"].recall
    for name, method in methods.items():
        scores = (hashing if name == "hashing" else main).scores[name]
        diff, se = paired_difference(scores.recall, reference)
        method[f"{recall_key}_diff_vs_online"] = None if math.isnan(diff) else diff
        method[f"{recall_key}_diff_se"] = None if math.isnan(se) else se
        half = scores.recall[second]
        method[f"{recall_key}_second_half"] = float(half.mean()) if half.size else None
        method[f"{ndcg_key}_second_half"] = float(scores.ndcg[second].mean()) if half.size else None
        _, half_se = paired_difference(half, reference[second])
        method[f"{recall_key}_second_half_diff_se"] = None if math.isnan(half_se) else half_se
