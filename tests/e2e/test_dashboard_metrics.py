"""Every metric the Grafana dashboard queries is exported by a running freshrec service.

The PromQL of every panel is reduced to the metric names it selects and the labels it
groups or filters by; the three services run as real processes, see a few events (one of
them invalid) and a recommendation so that labelled series exist, and their `/metrics` are
scraped. A dashboard panel whose metric is renamed or never exported would silently show
"No data"; this test names it instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Stack
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "freshrec.json"
T0 = 1_750_000_000.0

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan", "atan2"}
)
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard, reduced to what it needs from the exporters."""

    panel: str
    expr: str
    metrics: frozenset[str]
    labels: frozenset[str]


def parse_promql(expr: str) -> tuple[frozenset[str], frozenset[str]]:
    """The metric names an expression selects and the label names it groups or matches on.

    Metric names are kept exactly as written (`x_bucket` stays `x_bucket`): the exposition
    format lists histogram samples under those suffixed names, so they are compared with
    sample names, never guessed back to a family name.
    """
    labels: set[str] = set()
    text = _STRING.sub('""', expr)
    for group in _GROUPING.findall(text):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    text = _GROUPING.sub(" ", text)
    for matcher in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(matcher))
    text = _RANGE.sub(" ", _MATCHERS.sub(" ", text))
    metrics = {
        name
        for name, call in _IDENT.findall(text)
        if not call and name not in _KEYWORDS and name != "__name__"
    }
    return frozenset(metrics), frozenset(labels - {"__name__"})


def _exprs(node: Any, panel: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        title = str(node.get("title", panel)) if "targets" in node or "panels" in node else panel
        for key, value in node.items():
            if key == "expr" and isinstance(value, str) and value.strip():
                yield title, value
            else:
                yield from _exprs(value, title)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item, panel)


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    """Every PromQL expression (`expr`) in a Grafana dashboard, nested rows included."""
    queries = []
    for panel, expr in _exprs(json.loads(path.read_text())):
        metrics, labels = parse_promql(expr)
        queries.append(Query(panel, expr, metrics, labels))
    return queries


def test_promql_reduction() -> None:
    cases = {
        'histogram_quantile(0.99, sum by (le, route) (rate(x_seconds_bucket{service="r",'
        ' route!~"/metrics|/healthz"}[$__rate_interval])))': (
            {"x_seconds_bucket"},
            {"le", "route", "service"},
        ),
        "sum(rate(a_total[5m])) / ignoring(job) sum(b) > bool 0.5": ({"a_total", "b"}, {"job"}),
        "max(c) by (table) offset 1m": ({"c"}, {"table"}),
        'count(up{job="x"} == 1e3)': ({"up"}, {"job"}),
    }
    for expr, (metrics, labels) in cases.items():
        assert parse_promql(expr) == (frozenset(metrics), frozenset(labels)), expr
    queries = dashboard_queries()
    assert len(queries) >= 20
    names = set().union(*(q.metrics for q in queries))
    assert "freshrec_http_request_duration_seconds_bucket" in names
    assert all(name.startswith("freshrec_") for name in names), names


def _scrape(url: str) -> dict[str, set[str]]:
    """Sample name → the label names seen on it."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def _wait_trained(stack: Stack, events: int, batches: int, timeout_s: float = 30.0) -> None:
    last: dict[str, Any] = {}

    def trained() -> bool:
        last.update(httpx.get(f"{stack.trainer}/v1/status", timeout=5).json())
        return bool(sum(last["offsets"].values()) >= events and last["batches"] >= batches)

    wait_until(
        trained,
        timeout_s,
        f"the trainer to consume {events} events in {batches} batches",
        interval_s=0.1,
        detail=lambda: f"consumed {sum(last['offsets'].values())} in {last['batches']} batches",
    )


def test_every_dashboard_metric_is_exported(running_stack: Stack) -> None:
    stack = running_stack
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    events = [
        {
            "event_id": f"e{n}",
            "type": "rating",
            "user_id": f"u{n % 4}",
            "item_id": f"i{n % 5}",
            "timestamp": T0 + n,
            "value": float(1 + n % 5),
            "context": {"device": "web"},
        }
        for n in range(20)
    ]
    # two batches: expiry (and its per-table counter) runs before every batch but the first
    for batch in (1, 2):
        part = events[10 * (batch - 1) : 10 * batch]
        accepted = httpx.post(
            f"{stack.ingest}/v1/events", json={"events": part}, headers=auth, timeout=30
        )
        assert accepted.status_code == 202, accepted.text
        _wait_trained(stack, events=10 * batch, batches=batch)
    bad = {**events[0], "event_id": "bad", "type": "no-such-type"}
    rejected = httpx.post(f"{stack.ingest}/v1/events", json={"events": [bad]}, headers=auth)
    assert rejected.status_code == 422, rejected.text
    recommended = httpx.post(
        f"{stack.ranker}/v1/recommend", json={"user_id": "u1", "k": 3}, timeout=10
    )
    assert recommended.status_code == 200, recommended.text

    exported = {
        name: _scrape(url)
        for name, url in (
            ("ingest", stack.ingest),
            ("trainer", stack.trainer),
            ("ranker", stack.ranker),
        )
    }
    missing: list[str] = []
    unlabelled: list[str] = []
    for query in dashboard_queries():
        sources = {
            metric: [service for service, samples in exported.items() if metric in samples]
            for metric in query.metrics
        }
        missing += [
            f"{metric} (panel {query.panel!r}: {query.expr})"
            for metric, services in sources.items()
            if not services
        ]
        present = set().union(
            *(exported[s][m] for m, services in sources.items() for s in services)
        )
        unlabelled += [
            f"label {label!r} (panel {query.panel!r}: {query.expr}; labels seen: {sorted(present)})"
            for label in sorted(query.labels - present)
            if any(sources.values())
        ]
    problems = [f"not exported: {m}" for m in missing] + [f"not carried: {u}" for u in unlabelled]
    assert not problems, "the dashboard asks for what no service exports:\n" + "\n".join(problems)
