"""Real Prometheus scrapes the running stack and answers every query of the Grafana dashboard.

Debian's `prometheus` (installed by `make install`) runs with `deploy/prometheus/prometheus.yml`,
its targets pointed at the test's stack and its scrape interval shortened to 1 s, and with the
alert rules it ships. While a small steady load runs (events, one invalid, recommendations),
the test waits until every freshrec target is `up`, checks that every alert rule loaded and
evaluates without error, and runs every PromQL expression of the dashboard through
Prometheus's HTTP API: each must parse and return data, a number (a quantile over a window
without observations answers NaN, which counts as no data).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.cli.ports import free_port
from tests.e2e.conftest import Stack
from tests.e2e.test_dashboard_metrics import dashboard_queries
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "freshrec.yml"
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval for a 1 s scrape interval


def _config(stack: Stack, own_port: int) -> dict[str, Any]:
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    hosts = {
        "ingest": stack.ingest,
        "trainer": stack.trainer,
        "ranker": stack.ranker,
        "prometheus": f"http://127.0.0.1:{own_port}",
    }
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(hosts), f"the shipped config scrapes {sorted(jobs)}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [hosts[job["job_name"]].removeprefix("http://")]}]
    return config


@pytest.fixture
def prometheus(running_stack: Stack, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make install` installs Debian's package")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(running_stack, port)))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/-/ready"), 60, "Prometheus ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class _Traffic:
    """A small steady load until stopped: events every 0.3 s, one invalid, recommendations."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {self.stack.api_key}"}
        n = 0
        while not self._stop.is_set():
            events = [
                {"event_id": f"p{n}-{k}", "type": "rating", "user_id": f"u{k % 7}",
                 "item_id": f"i{(n + k) % 11}", "timestamp": time.time(),
                 "value": float(1 + k % 5), "context": {"device": "web"}}
                for k in range(10)
            ]  # fmt: skip
            bad = {**events[0], "event_id": f"bad-{n}", "type": "no-such-type"}
            try:
                httpx.post(f"{self.stack.ingest}/v1/events", json={"events": events}, headers=auth)
                httpx.post(f"{self.stack.ingest}/v1/events", json={"events": [bad]}, headers=auth)
                for user in ("u1", "someone-new"):  # a known user, and a fallback
                    httpx.post(
                        f"{self.stack.ranker}/v1/recommend",
                        json={"user_id": user, "k": 5},
                        headers=auth,
                        timeout=10,
                    )
            except httpx.HTTPError:
                pass
            n += 1
            self._stop.wait(0.3)


def _query(prometheus: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = response.json()
    return body


def _observed(series: dict[str, Any]) -> bool:
    """Whether a series of an instant query holds a number: `histogram_quantile` over a window
    without observations answers NaN, which is a result but not data."""
    return str(series["value"][1]).lower() not in ("nan", "+inf", "-inf", "inf")


def _targets_up(prometheus: str) -> bool:
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return len(targets) == 4 and all(t["health"] == "up" for t in targets)


def test_prometheus_scrapes_every_target_and_answers_every_dashboard_query(
    running_stack: Stack, prometheus: str
) -> None:
    with _Traffic(running_stack):
        wait_until(lambda: _targets_up(prometheus), 60, "every target up in Prometheus")
        queries = dashboard_queries()
        exprs = [(q.panel, q.expr.replace("$__rate_interval", RATE_INTERVAL)) for q in queries]

        def answered() -> list[str]:
            problems = []
            for panel, expr in exprs:
                body = _query(prometheus, expr)
                if body.get("status") != "success":
                    problems.append(f"{panel}: {expr}: {body.get('error')}")
                elif not any(_observed(series) for series in body["data"]["result"]):
                    problems.append(f"{panel}: {expr}: no data")
            return problems

        last: list[str] = []

        def all_answered() -> bool:
            last[:] = answered()
            return not last

        # rates and quantiles need two scrapes of a moving counter: give the load time
        wait_until(all_answered, 90, "every dashboard query to return data", interval_s=2,
                   detail=lambda: "\n".join(last))  # fmt: skip

        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        loaded = [rule for group in rules for rule in group["rules"]]
        assert len(loaded) == len(yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
        assert all(rule["health"] == "ok" for rule in loaded), [
            (rule["name"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"
        ]
    print(f"prometheus: {len(exprs)} dashboard queries answered, {len(loaded)} rules healthy")
