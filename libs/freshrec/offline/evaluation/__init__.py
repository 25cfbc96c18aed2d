"""Prequential (predict-then-train) evaluation of freshrec on a replayed event stream.

`run_eval` replays a time-ordered stream (MovieLens-100K by default) through the product's
`OnlineTrainer`, scores every example before the trainer sees it, and compares online
training on collisionless tables with a hashing-trick table, stale serving copies, a frozen
model and a popularity baseline, plus admission-filter and expiry sweeps; the `freshrec eval`
command (services/cli) calls `run_eval`. See `docs/evaluation.md`.

Public names are imported on first use, so importing this package from the command line
does not make every command pay for importing torch and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from freshrec.offline.evaluation.config import DEFAULT_STALENESS, EvalConfig
    from freshrec.offline.evaluation.harness import EventSource, run_eval
    from freshrec.offline.evaluation.metrics import MethodScores, expected_rank_metrics, log_loss
    from freshrec.offline.evaluation.prequential import RunResult, ServingPlan, replay_run
    from freshrec.offline.evaluation.stores import StoreKind
    from freshrec.offline.evaluation.stream import EvalStream, Queries, plan_batches, prepare_stream

__all__ = [
    "DEFAULT_STALENESS",
    "EvalConfig",
    "EvalStream",
    "EventSource",
    "MethodScores",
    "Queries",
    "RunResult",
    "ServingPlan",
    "StoreKind",
    "expected_rank_metrics",
    "log_loss",
    "plan_batches",
    "prepare_stream",
    "replay_run",
    "run_eval",
]

_HOME = {
    "DEFAULT_STALENESS": "config",
    "EvalConfig": "config",
    "EventSource": "harness",
    "StoreKind": "stores",
    "run_eval": "harness",
    "MethodScores": "metrics",
    "expected_rank_metrics": "metrics",
    "log_loss": "metrics",
    "RunResult": "prequential",
    "ServingPlan": "prequential",
    "replay_run": "prequential",
    "EvalStream": "stream",
    "Queries": "stream",
    "plan_batches": "stream",
    "prepare_stream": "stream",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
