"""The local stack's supervisor: a service killed with SIGKILL comes back by itself."""

from __future__ import annotations

import os
import signal

from services.cli import stack
from tests.e2e.conftest import Stack, ready
from tests.waiting import wait_until


def test_killed_services_are_restarted_and_counted(running_stack: Stack) -> None:
    urls = {
        "ingest": running_stack.ingest,
        "trainer": running_stack.trainer,
        "ranker": running_stack.ranker,
    }
    for name, url in urls.items():
        before = running_stack.pid(name)
        os.kill(before, signal.SIGKILL)
        wait_until(
            lambda n=name, b=before: running_stack.pid(n) != b,  # type: ignore[misc]
            timeout_s=30,
            what=f"the supervisor to restart {name}",
        )
        wait_until(lambda u=url: ready(u), timeout_s=120, what=f"{name} ready again")  # type: ignore[misc]
        assert stack.alive(running_stack.pid(name))
    assert stack.restart_counts() == {"ingest": 1, "trainer": 1, "ranker": 1}


def test_stack_up_after_the_supervisor_was_killed_works_on_the_first_call(
    running_stack: Stack,
) -> None:
    supervisor = int((running_stack.run_dir / "supervisor.pid").read_text())
    old_trainer = running_stack.pid("trainer")
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not stack.alive(supervisor), timeout_s=10, what="the supervisor gone")
    urls = stack.start_services(timeout_s=120, env=running_stack.env)
    assert all(ready(url) for url in urls.values())
    assert running_stack.pid("trainer") != old_trainer, "the new supervisor runs its own"
    assert not stack.alive(old_trainer), "the orphan was stopped"
