"""The local stack's supervisor: runs the three services and restarts any that crashes.

`freshrec stack up` starts this process (`python -m services.cli.supervisor`) in its own session;
it starts every service as its child, writes each child's pid file, and watches them:

- a service that exits with a non-zero status or is killed by a signal is restarted after a
  backoff that doubles from `RESTART_BACKOFF_S` up to `MAX_BACKOFF_S` (reset once a run lasted
  `STABLE_AFTER_S`), and its restart is counted;
- a service that exits with status 0 (a clean stop, e.g. an operator's SIGTERM) stays down;
- on SIGTERM or SIGINT the supervisor stops every service (SIGTERM, SIGKILL after
  `STOP_TIMEOUT_S`) and exits;
- services still running from a supervisor that was killed are stopped when a new one starts,
  and started again under it.

Its state is written to `stack.json` in the run directory after every change: per service
the pid, the restart count, the last exit status and whether it is running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from freshrec.files import replace_text
from services.cli.stack import SERVICES, Service, run_dir, running_pid, terminate

__all__ = ["MAX_BACKOFF_S", "RESTART_BACKOFF_S", "STABLE_AFTER_S", "STATE_FILE", "main"]

logger = logging.getLogger("freshrec.supervisor")

RESTART_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
STOP_TIMEOUT_S = 30.0
STATE_FILE = "stack.json"


@dataclass
class _Child:
    service: Service
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = RESTART_BACKOFF_S
    start_at: float | None = 0.0  # when to (re)start; None: stays down
    last_exit: int | None = None


def _start(child: _Child, run: Path) -> None:
    log = run / f"{child.service.name}.log"
    with log.open("ab") as out:
        child.proc = subprocess.Popen(
            [sys.executable, "-m", child.service.module],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**child.service.defaults, **os.environ},
        )
    child.started_at = time.monotonic()
    child.start_at = None
    replace_text(run / f"{child.service.name}.pid", str(child.proc.pid))
    logger.info("started %s (pid %d)", child.service.name, child.proc.pid)


def _reap(child: _Child) -> bool:
    """Handle a child that exited; True when something changed."""
    if child.proc is None or child.proc.poll() is None:
        return False
    code = child.proc.returncode
    child.proc, child.last_exit = None, code
    if code == 0:
        logger.info("%s stopped cleanly; not restarted", child.service.name)
        return True
    ran = time.monotonic() - child.started_at
    if ran >= STABLE_AFTER_S:
        child.backoff_s = RESTART_BACKOFF_S
    child.restarts += 1
    child.start_at = time.monotonic() + child.backoff_s
    logger.warning(
        "%s exited with %s after %.1f s; restart %d in %.1f s",
        child.service.name,
        code,
        ran,
        child.restarts,
        child.backoff_s,
    )
    child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
    return True


def _write_state(children: list[_Child], run: Path) -> None:
    state = {
        c.service.name: {
            "pid": c.proc.pid if c.proc is not None else None,
            "running": c.proc is not None,
            "restarts": c.restarts,
            "last_exit": c.last_exit,
        }
        for c in children
    }
    replace_text(run / STATE_FILE, json.dumps(state))


def _stop(children: list[_Child], run: Path) -> None:
    running = [c for c in children if c.proc is not None]
    for child in running:
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in running:
        assert child.proc is not None
        try:
            child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM; killing it", child.service.name)
            child.proc.kill()
            child.proc.wait(timeout=10)
        child.proc = None
    for child in children:
        (run / f"{child.service.name}.pid").unlink(missing_ok=True)


def _stop_orphans() -> None:
    """Stop services left running by a supervisor that died, so this one can start its own."""
    for service in SERVICES:
        pid = running_pid(service.name)
        if pid is not None:
            logger.warning("stopping %s (pid %d) left by an earlier supervisor", service.name, pid)
            terminate(pid, STOP_TIMEOUT_S)


def main() -> None:
    """Supervise the services until SIGTERM/SIGINT."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = run_dir()
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _stop_orphans()
    children = [_Child(service) for service in SERVICES]
    changed = True
    while not stop.is_set():
        now = time.monotonic()
        for child in children:
            if child.proc is None and child.start_at is not None and child.start_at <= now:
                _start(child, run)
                changed = True
            changed = _reap(child) or changed
        if changed:
            _write_state(children, run)
            changed = False
        stop.wait(0.2)
    _stop(children, run)
    _write_state(children, run)
    logger.info("supervisor stopped (pid %d)", os.getpid())


if __name__ == "__main__":
    main()
