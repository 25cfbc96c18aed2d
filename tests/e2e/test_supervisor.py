"""The local stack's supervisor: a service killed with SIGKILL comes back by itself."""

from __future__ import annotations

import os
import signal

import httpx

from services.cli import stack
from tests.e2e.conftest import Stack
from tests.waiting import wait_until


def _pid(run: Stack, name: str) -> int:
    return int((run.run_dir / f"{name}.pid").read_text())


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_killed_services_are_restarted_and_counted(running_stack: Stack) -> None:
    urls = {
        "ingest": running_stack.ingest,
        "trainer": running_stack.trainer,
        "ranker": running_stack.ranker,
    }
    for name, url in urls.items():
        before = _pid(running_stack, name)
        os.kill(before, signal.SIGKILL)
        wait_until(
            lambda n=name, b=before: _pid(running_stack, n) != b,  # type: ignore[misc]
            timeout_s=30,
            what=f"the supervisor to restart {name}",
        )
        wait_until(lambda u=url: _ready(u), timeout_s=120, what=f"{name} ready again")  # type: ignore[misc]
        assert stack.alive(_pid(running_stack, name))
    assert stack.restart_counts() == {"ingest": 1, "trainer": 1, "ranker": 1}


def test_stack_up_after_the_supervisor_was_killed_works_on_the_first_call(
    running_stack: Stack,
) -> None:
    supervisor = int((running_stack.run_dir / "supervisor.pid").read_text())
    old_trainer = _pid(running_stack, "trainer")
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not stack.alive(supervisor), timeout_s=10, what="the supervisor gone")
    urls = stack.start_services(timeout_s=120, env=running_stack.env)
    assert all(_ready(url) for url in urls.values())
    assert _pid(running_stack, "trainer") != old_trainer, "the new supervisor runs its own"
    assert not stack.alive(old_trainer), "the orphan was stopped"
