"""The trainer-count bench's stream and its CPU reading from /proc."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict

from freshrec.offline.bench.trainers import ITEMS, PARTITIONS, partitioned_stream, tree_cpu_s


def test_every_item_is_on_every_partition_and_each_user_on_one() -> None:
    partitions, events = partitioned_stream(8_000, seed=3)
    assert len(partitions) == len(events) == 8_000
    item_partitions: dict[str, set[int]] = defaultdict(set)
    user_partitions: dict[str, set[int]] = defaultdict(set)
    for partition, event in zip(partitions, events, strict=True):
        item_partitions[str(event.item_id)].add(partition)
        user_partitions[str(event.user_id)].add(partition)
    assert len(item_partitions) == ITEMS
    assert all(p == set(range(PARTITIONS)) for p in item_partitions.values())
    assert all(len(p) == 1 for p in user_partitions.values())
    assert len({e.event_id for e in events}) == len(events)


def test_tree_cpu_counts_a_child_process() -> None:
    # the parent sleeps; only its child burns CPU, so the tree's time is the child's
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {burn!r}])"
            "\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_s(parent.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_cpu_s(parent.pid) >= 0.3
    finally:
        parent.kill()
        parent.wait(timeout=10)
