"""The trainer benchmark measures two stream sizes, a raw consume and the trainer's memory."""

from __future__ import annotations

import json
from pathlib import Path

from freshrec.offline.bench.trainer import run_trainer_bench
from tests.conftest import Servers


def test_trainer_bench_writes_both_sizes_and_the_raw_baseline(
    servers: Servers, tmp_path: Path
) -> None:
    report = run_trainer_bench(
        servers.kafka_bootstrap,
        tmp_path,
        events=5000,  # three micro-batches: rates need a first and a last
        ids=6000,
        small_ids=2000,
        rate=100.0,
        rate_seconds=2.0,
    )
    assert json.loads((tmp_path / "trainer.json").read_text()) == report
    assert (tmp_path / "trainer.png").stat().st_size > 0
    assert [s["distinct_ids"] for s in report["sizes"]] == [2000, 6000]
    for size in report["sizes"]:
        assert size["events_per_s"] > 0 and size["raw_consume_records_per_s"] > 0
        assert size["trainer_peak_rss_bytes"] >= size["trainer_rss_ready_bytes"] > 0
    assert report["lag_events"] == 200
    assert report["large_vs_small_events_per_s"] > 0
