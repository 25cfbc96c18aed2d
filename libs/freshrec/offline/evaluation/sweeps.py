"""The sweeps: table settings replayed apart from the main run, inline or in a worker.

`sweep_settings` lists the admission `min_count` and event-time expiry settings of the user
and item tables; `run_sweep` replays one `SweepTask` (picklable, so it can go to a spawned
worker process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from freshrec.offline.evaluation.config import EvalConfig
from freshrec.offline.evaluation.prequential import RunResult, ServingPlan, replay_run
from freshrec.offline.evaluation.stores import RunStores, StoreKind
from freshrec.offline.evaluation.stream import EvalStream
from freshrec.table import TableConfig, TablesConfig
from freshrec.table.config import (
    CountingAdmission,
    ExpiryConfig,
    NoAdmission,
    NormalInit,
    UniformInit,
)
from freshrec.training.trainer import TrainerConfig

__all__ = [
    "SWEPT_TABLES",
    "SweepSetting",
    "SweepTask",
    "run_sweep",
    "seeded",
    "sweep_settings",
    "with_update",
]

SWEPT_TABLES = ("user", "item")


def seeded(tables: TablesConfig, seed: int) -> TablesConfig:
    """Shift every table's initializer seed by `seed`, so the run's seed moves all of them.

    Args:
        tables: the table definitions.
        seed: the run's seed.

    Returns:
        The same tables with shifted initializer seeds.
    """
    out: list[TableConfig] = []
    for table in tables.tables:
        init = table.initializer
        if isinstance(init, NormalInit | UniformInit):
            init = init.model_copy(update={"seed": init.seed + seed})
        out.append(table.model_copy(update={"initializer": init}))
    return TablesConfig(tables=out)


def with_update(tables: TablesConfig, names: tuple[str, ...], **update: object) -> TablesConfig:
    """`tables` with the fields in `update` replaced on the tables named in `names`.

    Args:
        tables: the table definitions.
        names: which tables change.
        **update: `TableConfig` fields and their new values.

    Returns:
        The updated definitions; the other tables unchanged.
    """
    return TablesConfig(
        tables=[t.model_copy(update=update) if t.name in names else t for t in tables.tables]
    )


@dataclass(frozen=True)
class SweepSetting:
    """One point of a sweep: its tables, and how the summary names it."""

    sweep: str
    label: str
    value: float | None
    tables: TablesConfig


def sweep_settings(base: TablesConfig, config: EvalConfig) -> list[SweepSetting]:
    """Every admission and expiry setting `config` sweeps, applied to the swept tables.

    Args:
        base: the main run's tables.
        config: names the `admission_min_counts` and `expiry_days` to sweep.

    Returns:
        Admission settings first, then expiry settings, in `config`'s order.
    """
    settings: list[SweepSetting] = []
    for m in config.admission_min_counts:
        admission = NoAdmission() if m == 0 else CountingAdmission(min_count=m)
        settings.append(
            SweepSetting(
                "admission",
                f"min_count={m}",
                float(m),
                with_update(base, SWEPT_TABLES, admission=admission),
            )
        )
    for days in config.expiry_days:
        expiry = None if days is None else ExpiryConfig(clock="event", expire_after_s=days * 86400)
        label = "expiry=none" if days is None else f"expiry={days:g}d"
        settings.append(
            SweepSetting("expiry", label, days, with_update(base, SWEPT_TABLES, expiry=expiry))
        )
    return settings


@dataclass(frozen=True)
class SweepTask:
    """One sweep replay, shipped to a worker process."""

    label: str
    tables: TablesConfig
    stream: EvalStream
    trainer_config: TrainerConfig
    batches: list[tuple[int, int]]
    plan: ServingPlan
    store: StoreKind
    redis_url: str | None
    prefix: str


def run_sweep(task: SweepTask, on_batch: Callable[[int], None] | None = None) -> RunResult:
    """Replay one sweep setting (in a worker process, or inline).

    Args:
        task: the setting, its stream and batches.
        on_batch: called with the events of each replayed batch (progress).

    Returns:
        The run's scores and row counts.
    """
    # Worker processes start with torch's default thread count; the figures must not depend
    # on where a run happened.
    torch.set_num_threads(1)
    stores = RunStores(task.store, task.redis_url, task.prefix)
    try:
        with stores.open(task.label.replace("=", "-"), task.tables) as tables:
            return replay_run(
                task.stream,
                tables,
                trainer_config=task.trainer_config,
                batches=task.batches,
                plan=task.plan,
                on_batch=on_batch,
            )
    finally:
        stores.close()
