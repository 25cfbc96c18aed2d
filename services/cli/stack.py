"""Start, stop and check the three freshrec services as local background processes.

`up` starts the supervisor (`services.cli.supervisor`) in its own session; it runs each service
as `python -m services.<name>.main`, with its log and pid file in the run directory
(`FRESHREC_RUN_DIR`, default `~/.cache/freshrec/run`), and restarts a service that crashes.
`up` waits until every service answers `/readyz` (with a deadline, naming the log to read when
one does not); `down` stops the supervisor, which stops the services first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from freshrec.files import replace_text

__all__ = [
    "SERVICES",
    "Service",
    "alive",
    "restart_counts",
    "run_dir",
    "running_pid",
    "service_status",
    "start_services",
    "stop_services",
    "terminate",
    "use_run_dir",
]


@dataclass(frozen=True)
class Service:
    """One freshrec process: its module, the env var of its port, its default port, and the
    settings the stack gives it unless the environment says otherwise."""

    name: str
    module: str
    port_env: str
    default_port: int
    defaults: Mapping[str, str] = field(default_factory=dict)

    def port(self, env: Mapping[str, str]) -> int:
        return int(env.get(self.port_env, self.default_port))

    def url(self, env: Mapping[str, str]) -> str:
        return f"http://127.0.0.1:{self.port(env)}"


_supervisor: subprocess.Popen[bytes] | None = None
"""The supervisor this interpreter started; kept so it is reaped, not left as a zombie."""

SERVICES = (
    Service("ingest", "services.ingest.main", "FRESHREC_INGEST_PORT", 8001),
    # one trainer: a static member, so a restarted trainer resumes without a rebalance
    Service(
        "trainer",
        "services.trainer",
        "FRESHREC_TRAINER_PORT",
        8002,
        {"FRESHREC_CONSUMER__GROUP_INSTANCE_ID": "trainer-0"},
    ),
    Service("ranker", "services.ranker.main", "FRESHREC_RANKER_PORT", 8000),
)


def run_dir() -> Path:
    """Where logs and pid files live."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "freshrec" / "run"
    path = Path(os.environ.get("FRESHREC_RUN_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def use_run_dir(path: Path) -> Iterator[None]:
    """Point `FRESHREC_RUN_DIR` at `path` for the services started inside, then restore it."""
    previous = os.environ.get("FRESHREC_RUN_DIR")
    os.environ["FRESHREC_RUN_DIR"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FRESHREC_RUN_DIR", None)
        else:
            os.environ["FRESHREC_RUN_DIR"] = previous


def alive(pid: int) -> bool:
    """Whether `pid` runs: exists and is not a zombie (exited, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust the signal
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM `pid`, wait until it is gone, SIGKILL it after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running_pid(name: str) -> int | None:
    """The pid in `name`'s pid file, when that process runs."""
    try:
        pid = int((run_dir() / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def restart_counts() -> dict[str, int]:
    """Service name → restarts the supervisor made (empty when it never ran)."""
    try:
        state = json.loads((run_dir() / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: int(entry.get("restarts", 0)) for name, entry in state.items()}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _start_supervisor(environ: Mapping[str, str]) -> None:
    global _supervisor  # noqa: PLW0603 - one supervisor per interpreter, reaped at stop
    if _supervisor is not None:
        _supervisor.wait(timeout=10)  # an earlier one that died: reap it
    log = run_dir() / "supervisor.log"
    (run_dir() / "stack.json").unlink(missing_ok=True)
    with log.open("ab") as out:
        _supervisor = subprocess.Popen(
            [sys.executable, "-m", "services.cli.supervisor"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # the supervisor and the services use this process's run directory
            env={**environ, "FRESHREC_RUN_DIR": str(run_dir())},
            start_new_session=True,
        )
    replace_text(run_dir() / "supervisor.pid", str(_supervisor.pid))


def start_services(
    timeout_s: float = 120.0, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Start the supervised services unless they run already, and wait until all are ready.

    Returns:
        Service name → base URL.

    Raises:
        RuntimeError: the supervisor exited, or a service was not ready in time (names its
            log and how often it was restarted).
    """
    environ = dict(os.environ if env is None else env)
    urls = {s.name: s.url(environ) for s in SERVICES}
    deadline = time.monotonic() + timeout_s
    if running_pid("supervisor") is None:
        _start_supervisor(environ)
        # its state file appears once it has stopped any orphans and started its services
        while not (run_dir() / "stack.json").exists():
            if running_pid("supervisor") is None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack's supervisor did not start; see {run_dir()}")
            time.sleep(0.1)
    for service in SERVICES:
        while not _ready(urls[service.name]):
            log = run_dir() / f"{service.name}.log"
            if running_pid("supervisor") is None:
                raise RuntimeError(f"the stack's supervisor exited; see {run_dir()}/supervisor.log")
            if time.monotonic() > deadline:
                restarts = restart_counts().get(service.name, 0)
                raise RuntimeError(
                    f"{service.name} not ready after {timeout_s:.0f}s ({restarts} restarts); "
                    f"see {log}"
                )
            time.sleep(0.3)
    return urls


def stop_services(timeout_s: float = 60.0) -> list[str]:
    """Stop the supervisor and with it every service (SIGKILL after `timeout_s`).

    Returns:
        Names of the services that were running.
    """
    global _supervisor  # noqa: PLW0603
    running = [s.name for s in SERVICES if running_pid(s.name) is not None]
    pid = running_pid("supervisor")
    if pid is not None:
        terminate(pid, timeout_s)  # it stops the services first
        for name in running:
            leftover = running_pid(name)
            if leftover is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGKILL)
    if _supervisor is not None:
        _supervisor.wait(timeout=10)
        _supervisor = None
    for name in ("supervisor", *(s.name for s in SERVICES)):
        (run_dir() / f"{name}.pid").unlink(missing_ok=True)
    return running


def service_status(env: Mapping[str, str] | None = None) -> dict[str, tuple[bool, str]]:
    """Service name → (ready, base URL); `restart_counts` says how often each restarted."""
    environ = dict(os.environ if env is None else env)
    return {s.name: (_ready(s.url(environ)), s.url(environ)) for s in SERVICES}
