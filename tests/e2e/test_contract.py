"""The OpenAPI contract: `schemathesis run --checks all` against each service's own document.

Each service runs as a real process (`running_stack`); schemathesis generates about 1,000
cases from `/openapi.json` (valid and invalid ones, seeded), sends them over 127.0.0.1 with
the stack's API key and checks every answer against the document: declared status, body
schema, headers, valid input accepted, invalid input refused, no server error. The run must
report no failure, and the services' own metrics must show that the accepted path was
reached (202 from ingest, 200 from the ranker), so a document that made every generated case
invalid would fail here too.

Schemathesis writes its report, cassette-free, into the test's `tmp_path` and runs there, so
`.hypothesis` and `.schemathesis` never land in the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Stack

HOOKS = Path(__file__).with_name("contract_hooks.py")
SEED = 20261201
TIME_LIMIT_S = 150.0
"""Hard bound on one service's run; a normal one takes 15-40 s on the 2-core machine."""

# 413 refuses a body over the size or event bound, as docs/specs/events.md says; schemathesis's
# default list of refusals lacks it. The cache would keep state between runs: off.
CONFIG = """
[cache]
enabled = false

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429", "5xx"]
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    report: dict[str, object]
    seconds: float

    def generated(self) -> int:
        cases = self.report.get("test_cases")
        return int(cases["generated"]) if isinstance(cases, dict) else 0


def _schemathesis(base_url: str, api_key: str, max_examples: int, workdir: Path) -> Run:
    """One bounded `schemathesis run --checks all` against `base_url`'s document."""
    assert urlsplit(base_url).hostname == "127.0.0.1", base_url
    workdir.mkdir()
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = workdir / "report.json"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {api_key}",
        "--seed",
        str(SEED),
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-dir",
        str(workdir / "reports"),
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        # a timestamp the moving bound may overtake during the run (see contract_hooks.py)
        "FRESHREC_CONTRACT_CLOCK_WINDOW_S": str(TIME_LIMIT_S),
    }
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        pytest.fail(
            f"schemathesis did not finish within {TIME_LIMIT_S:.0f} s:\n{_readable(partial)}",
            pytrace=False,
        )
    seconds = time.monotonic() - started
    loaded = json.loads(report.read_text()) if report.exists() else {}
    return Run(done.returncode, done.stdout + done.stderr, loaded, seconds)


def _readable(output: str, max_line: int = 2000, max_total: int = 40_000) -> str:
    """Schemathesis's output with its longest lines (whole request bodies) cut."""
    lines = [
        line if len(line) <= max_line else line[:max_line] + " …" for line in output.splitlines()
    ]
    text = "\n".join(lines)
    return text if len(text) <= max_total else "…\n" + text[-max_total:]


def _requests(base_url: str, route: str, status: str) -> float:
    """`freshrec_http_requests_total` of `route` answered with `status`, from the service."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "freshrec_http_requests"
        for sample in family.samples
        if sample.name == "freshrec_http_requests_total"
        and sample.labels.get("route") == route
        and sample.labels.get("status") == status
    )


def _check(run: Run, service: str, minimum_cases: int) -> None:
    print(f"{service}: {run.generated()} cases in {run.seconds:.1f} s")  # shown with -rA
    if run.returncode != 0:
        pytest.fail(
            f"schemathesis found failures in {service}:\n{_readable(run.output)}", pytrace=False
        )
    assert run.generated() >= minimum_cases, _readable(run.output)


def test_ingest_keeps_its_openapi_contract(running_stack: Stack, tmp_path: Path) -> None:
    run = _schemathesis(running_stack.ingest, running_stack.api_key, 900, tmp_path / "ingest")
    _check(run, "ingest", minimum_cases=800)
    accepted = _requests(running_stack.ingest, "/v1/events", "202")
    assert accepted >= 50, f"only {accepted:.0f} generated batches were accepted"


def test_ranker_keeps_its_openapi_contract(running_stack: Stack, tmp_path: Path) -> None:
    run = _schemathesis(running_stack.ranker, running_stack.api_key, 450, tmp_path / "ranker")
    _check(run, "ranker", minimum_cases=800)
    answered = _requests(running_stack.ranker, "/v1/recommend", "200")
    assert answered >= 50, f"only {answered:.0f} generated requests were answered"
