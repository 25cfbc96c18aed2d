"""Prequential (predict-then-train) evaluation of freshrec on a replayed event stream.

`run_eval` replays a time-ordered stream (MovieLens-100K by default) through the product's
`OnlineTrainer`, scores every example before the trainer sees it, and compares online
training on collisionless tables with a hashing-trick table, stale serving copies, a frozen
model and a popularity baseline, plus admission-filter and expiry sweeps. `eval_command` is
the `freshrec eval` command. See `docs/evaluation.md`.
"""

from freshrec.evaluation.cli import eval_command
from freshrec.evaluation.config import DEFAULT_STALENESS, EvalConfig
from freshrec.evaluation.harness import EventSource, StoreKind, run_eval
from freshrec.evaluation.metrics import MethodScores, expected_rank_metrics, log_loss
from freshrec.evaluation.replay import RunResult, ServingPlan, replay_run
from freshrec.evaluation.stream import EvalStream, Queries, plan_batches, prepare_stream

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
    "eval_command",
    "expected_rank_metrics",
    "log_loss",
    "plan_batches",
    "prepare_stream",
    "replay_run",
    "run_eval",
]
