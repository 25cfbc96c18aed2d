"""`run_eval` end to end on a small synthetic MovieLens-shaped stream (no download)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from freshrec.errors import ConfigError
from freshrec.offline.evaluation import EvalConfig, run_eval
from freshrec.offline.evaluation.peers import als_unavailable
from services.cli.evaluate import eval_command

from .synthetic import synthetic_ratings

SMALL = EvalConfig(
    max_batch_span_s=None,
    sweep_max_batch_span_s=None,
    windows=4,
    rank_sample=0.5,
)
PEERS = {"cooccurrence", "als"}
SCORES_ONLY = {*PEERS, "online_retrieval"}  # scores, not probabilities: no log loss
METHODS = {
    "online_retrieval",
    "online_no_user",
    "online",
    "hashing",
    "frozen",
    "stale_1min",
    "stale_10min",
    "stale_1h",
    "popularity",
}
EVENTS = synthetic_ratings(900)


def _main_run_only(windows: int, rank_sample: float, **fields: Any) -> EvalConfig:
    """A config without staleness copies or sweeps: only the main methods run."""
    return EvalConfig(
        max_batch_span_s=None,
        windows=windows,
        rank_sample=rank_sample,
        staleness=(),
        admission_min_counts=(),
        expiry_days=(),
        **fields,
    )


def _without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "timing"}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("eval-a")
    summary = run_eval(
        out,
        seed=5,
        batch_size=32,
        progress=False,
        events=iter(EVENTS),
        config=SMALL,
        workers=1,
    )
    return out, summary


def test_same_seed_gives_identical_numbers(
    first_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out_a, summary_a = first_run
    # the first run replayed everything inline; this one replays the sweeps in a worker
    # process, which must not change a single figure
    summary_b = run_eval(
        tmp_path / "b",
        seed=5,
        batch_size=32,
        progress=False,
        events=EVENTS,
        config=SMALL,
        workers=2,
    )
    assert _without_timing(summary_a) == _without_timing(summary_b)
    on_disk_a = json.loads((out_a / "summary.json").read_text())
    on_disk_b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert _without_timing(on_disk_a) == _without_timing(on_disk_b)


def test_another_seed_gives_other_numbers(
    first_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, summary_a = first_run
    other = run_eval(
        tmp_path,
        seed=6,
        batch_size=32,
        progress=False,
        events=EVENTS,
        config=_main_run_only(windows=4, rank_sample=0.5),
    )
    assert other["methods"]["online"]["auc"] != summary_a["methods"]["online"]["auc"]


def test_summary_holds_every_method_metric_and_sweep(
    first_run: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = first_run
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    methods = summary["methods"]
    if als_unavailable() is None:
        assert set(methods) == METHODS | PEERS
    else:  # said so in the summary, not a crash
        assert set(methods) == METHODS | {"cooccurrence"}
        assert "implicit is not installed" in summary["notes"]["als"]
    for name, method in methods.items():
        keys = ("auc", "recall_at_50", "ndcg_at_50", "recall_at_50_second_half")
        for key in (*keys, "logloss") if name not in SCORES_ONLY else keys:
            assert isinstance(method[key], float), (name, key)
        for key in ("auc", "recall_at_50", "ndcg_at_50"):
            assert len(method["windows"][key]) == 4, (name, key)
        assert isinstance(method["recall_at_50_diff_se"], float)
        if name in SCORES_ONLY:
            assert method["logloss"] is None
        assert method["examples"] == 900
        assert 0 < method["queries"] == summary["meta"]["queries"]
    assert 0.0 <= methods["online"]["auc"] <= 1.0
    hashing = methods["hashing"]
    assert 0.0 <= hashing["collision_rate"] <= 1.0
    # equal memory: one bucket per row the collisionless run ended with
    online_rows = methods["online"]["rows_by_table"]
    assert hashing["buckets"] == {t: online_rows[t] for t in ("user", "item")}
    assert hashing["rows"] <= sum(hashing["buckets"].values())
    assert [e["min_count"] for e in summary["sweeps"]["admission"]] == [0, 2, 5, 10]
    assert [e["expire_after_days"] for e in summary["sweeps"]["expiry"]] == [7, 30, 90, None]
    for entry in summary["sweeps"]["admission"] + summary["sweeps"]["expiry"]:
        assert isinstance(entry["rows"], int) and isinstance(entry["auc"], float)
    markdown = (out / "summary.md").read_text()
    assert "| online |" in markdown and "| hashing |" in markdown and "min_count" in markdown
    assert summary["meta"]["plots"]
    for name in summary["meta"]["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweeps_trade_rows_for_accuracy(first_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = first_run
    admission = {e["min_count"]: e for e in summary["sweeps"]["admission"]}
    expiry = {e["expire_after_days"]: e for e in summary["sweeps"]["expiry"]}
    assert admission[10]["rows"] < admission[2]["rows"] < admission[0]["rows"]
    assert expiry[7]["rows"] < expiry[None]["rows"]
    # the shipped tables (no filter, 90 days) are the main run itself
    assert admission[0]["shared_with"] == "online" == expiry[90]["shared_with"]
    assert admission[0]["auc"] == summary["methods"]["online"]["auc"]
    assert admission[10]["auc"] != admission[0]["auc"]


def test_hashing_collides_when_buckets_are_fewer_than_ids(tmp_path: Path) -> None:
    summary = run_eval(
        tmp_path,
        batch_size=32,
        progress=False,
        events=EVENTS,
        config=_main_run_only(windows=2, rank_sample=0.2, hashing_memory_ratio=0.5),
    )
    hashing = summary["methods"]["hashing"]
    for table in ("user", "item"):
        stats = hashing["collisions"][table]
        assert stats["buckets"] < stats["ids_seen"]
        assert stats["colliding_ids"] > 0
    assert hashing["collision_rate"] > 0.0
    assert hashing["rows"] <= sum(hashing["buckets"].values())
    assert summary["sweeps"] == {"admission": [], "expiry": []}


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        EvalConfig(rank_sample=1.5)
    with pytest.raises(ConfigError):
        EvalConfig(staleness=(("online", 60.0),))
    with pytest.raises(ConfigError, match="redis_url"):
        run_eval(tmp_path, store="redis", redis_url=None, events=EVENTS, progress=False)


def test_command_runs_on_an_events_file(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in synthetic_ratings(400, days=2.0)) + "\n")
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # keeps `eval` a named subcommand, as in freshrec
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--events",
            str(events),
            "--out",
            str(tmp_path / "out"),
            "--limit",
            "300",
            "--workers",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| online |" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["meta"]["events"] == 300
    assert summary["meta"]["batch_size"] == 16


def test_without_implicit_the_summary_says_so_instead_of_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from freshrec.offline.evaluation import harness  # noqa: PLC0415

    monkeypatch.setattr(harness, "als_unavailable", lambda: "implicit is not installed (test)")
    summary = run_eval(
        tmp_path,
        batch_size=64,
        progress=False,
        events=EVENTS[:300],
        config=_main_run_only(windows=2, rank_sample=0.5),
        workers=1,
    )
    assert "als" not in summary["methods"] and "cooccurrence" in summary["methods"]
    assert summary["notes"]["als"].startswith("not run: implicit is not installed")
    assert "`als`: not run" in (tmp_path / "summary.md").read_text()
