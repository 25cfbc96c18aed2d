"""The alert rules: valid for Prometheus, unit-tested firing and not firing, each with a runbook.

`promtool` (Debian's `prometheus` package, installed by `make install`) checks
`deploy/prometheus/rules/freshrec.yml` and runs its unit tests, `freshrec_test.yml`. Every
alert must be exercised there, and must have its runbook section in `docs/operations.md`,
where its `runbook` annotation points.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make install` installs Debian's prometheus")
    return subprocess.run(
        [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load((RULES / "freshrec.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    proc = _promtool("check", "rules", "freshrec.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_shipped_prometheus_config_loads_them() -> None:
    proc = _promtool("check", "config", str(RULES.parent / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(_alerts())} rules found" in proc.stdout, proc.stdout


def test_every_rule_unit_test_passes() -> None:
    proc = _promtool("test", "rules", "freshrec_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load((RULES / "freshrec_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in _alerts():
        name = alert["alert"]
        own = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in own), f"{name} is never tested firing"
        assert any(not case["exp_alerts"] for case in own), f"{name} is never tested quiet"


def test_every_alert_has_its_runbook_section() -> None:
    headings = {
        match.group(1).lower()
        for match in re.finditer(
            r"^#+ .*?`?(Freshrec\w+)`?\s*$", (ROOT / "docs" / "operations.md").read_text(), re.M
        )
    }
    for alert in _alerts():
        name = str(alert["alert"])
        annotations = alert["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/operations.md has no section for {name}"
