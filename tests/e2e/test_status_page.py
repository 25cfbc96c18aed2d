"""The ranker's built-in status page, loaded by headless Chromium against the running stack.

Chromium is driven through its plain command line: `--dump-dom` after a virtual-time budget
(the page polls `/v1/overview` every second, so the budget lets it refresh several times)
and `--screenshot` in the same run. The page marks itself `data-state="live"` after a
successful refresh and lists script errors in `#js-errors`, which is what these tests read.
CI installs Debian's `chromium` package; a machine without it fails here, by design.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from matplotlib.image import imread

from tests.e2e.conftest import Stack, post_events
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "results" / "status_page.png"
T0 = 1_750_000_000.0
ITEMS = [f"item{j}" for j in range(8)]
USERS = [f"user{n}" for n in range(10)]


def _require_chromium() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the status page test drives headless Chromium "
            "(Debian: `apt-get install -y chromium`)",
            pytrace=False,
        )
    return CHROMIUM


class _Page(HTMLParser):
    """What the test reads from a dumped DOM: `<html>` attributes, `data-field` texts,
    script errors, chart lines and table rows."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.root: dict[str, str] = {}
        self.fields: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self.polylines: dict[str, int] = {}
        self.table_rows: list[str] = []
        self.text: list[str] = []
        self._capture: tuple[str, str] | None = None
        self._svg: str | None = None
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.root = a
        if "data-field" in a:
            self._capture = ("field", a["data-field"])
            self.fields.setdefault(a["data-field"], []).append("")
        elif tag == "li" and self._capture is None:
            self._capture = ("error", "")
            self.errors.append("")
        if tag == "svg":
            self._svg = a.get("id", "")
            self.polylines[self._svg] = 0
        if tag == "polyline" and self._svg is not None:
            self.polylines[self._svg] += 1
        if tag == "tr" and "data-table" in a:
            self.table_rows.append(a["data-table"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None
        if tag in ("dd", "span", "li", "div"):
            self._capture = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._capture is None:
            return
        kind, name = self._capture
        if kind == "field":
            self.fields[name][-1] += data
        else:
            self.errors[-1] += data

    def field(self, name: str) -> str:
        values = self.fields.get(name)
        assert values, f"the page has no element for {name!r}"
        return values[0].strip()

    def number(self, name: str) -> float:
        raw = self.field(name)
        try:
            return float(raw.replace(",", "").split()[0].removesuffix("/s"))
        except ValueError:
            pytest.fail(f"{name} shows {raw!r}, not a number", pytrace=False)


def _load_page(chromium: Path, url: str, profile: Path, screenshot: Path | None) -> _Page:
    args = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)
        args.append(f"--screenshot={screenshot}")
    try:
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=45, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish loading {url} within 45 s", pytrace=False)
    assert done.returncode == 0 and "<html" in done.stdout, (
        f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    )
    return _Page(done.stdout)


def _assert_not_blank(png: Path) -> None:
    assert png.is_file() and png.stat().st_size > 0, f"no screenshot at {png}"
    pixels = np.asarray(imread(png))[..., :3]
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 1000, pixels.shape
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    background = np.all(pixels == pixels[0, 0], axis=-1).mean()
    # a blank or error page is one colour with a little text; the dashboard has cards,
    # coloured lines and anti-aliased figures all over
    assert float(pixels.std()) > 0.05, f"screenshot looks blank (std {pixels.std():.4f})"
    assert len(colours) > 200, f"screenshot has only {len(colours)} colours"
    assert background < 0.9, f"{background:.0%} of the screenshot is background"


def _post(stack: Stack, events: list[dict[str, Any]]) -> None:
    post_events(stack, events)


def _ratings(users: list[str], start: float) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{user}-{item}",
            "type": "rating",
            "user_id": user,
            "item_id": item,
            "timestamp": start + n,
            "value": 5.0 if (n + j) % 2 else 1.0,
        }
        for n, user in enumerate(users)
        for j, item in enumerate(ITEMS)
    ]


def _overview(stack: Stack) -> dict[str, Any]:
    response = httpx.get(f"{stack.ranker}/v1/overview", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait(
    what: str,
    condition: Callable[[], bool],
    timeout_s: float = 30.0,
    seen: Callable[[], object] | None = None,
) -> None:
    detail = None if seen is None else (lambda: f"last seen: {seen()}")
    wait_until(condition, timeout_s, what, interval_s=0.1, detail=detail)


def test_status_page_shows_live_figures_and_survives_the_trainer_going_away(
    running_stack: Stack, tmp_path: Path
) -> None:
    chromium = _require_chromium()
    stack = running_stack
    events = _ratings(USERS, T0)
    _post(stack, events)

    def settled() -> bool:
        o = _overview(stack)
        consumed = o["trainer"]["events_consumed_total"] or 0
        rows = (o["tables"] or {}).get("item", {}).get("rows", 0)
        return consumed >= len(events) and o["index"]["items"] == rows == len(ITEMS)

    _wait(
        "the trainer to consume every event and the index to hold every item",
        settled,
        seen=lambda: _overview(stack),
    )
    _wait("a published model", lambda: _overview(stack)["model"]["version"] is not None)
    # rates and quantiles cover the last seconds: fresh traffic for them to measure
    late = _ratings(["late-user"], T0 + 100)
    _post(stack, late)
    events += late

    def trainer_figures() -> dict[str, Any]:
        figures: dict[str, Any] = _overview(stack)["trainer"]
        return figures

    _wait(
        "the second batch to be consumed and its freshness measured",
        lambda: (
            trainer_figures()["events_consumed_total"] == len(events)
            and trainer_figures()["freshness_p50_s"] is not None
        ),
        seen=trainer_figures,
    )
    for user in (USERS[0], "nobody-ever"):
        response = httpx.post(
            f"{stack.ranker}/v1/recommend", json={"user_id": user, "k": 5}, timeout=10
        )
        assert response.status_code == 200, response.text

    # the JSON the page polls, straight from the ranker (recomputed at most every 0.5 s)
    _wait("both requests counted", lambda: _overview(stack)["ranker"]["requests_total"] == 2)
    o = _overview(stack)
    # the test's own overview polls are operational traffic and are not counted
    assert o["ranker"]["requests_total"] == o["ranker"]["recommendations_total"] == 2, (
        "operational routes counted as traffic; their `route` label on "
        "freshrec_http_requests_total must be their path template"
    )
    assert o["ranker"]["fallbacks_total"] == 1
    assert o["ranker"]["served_row_age_p50_s"] is not None
    assert o["ranker"]["latency_p99_s"] is not None and o["ranker"]["latency_p99_s"] > 0
    assert o["index"]["items"] == len(ITEMS) and o["index"]["following"] is True
    assert o["index"]["version"] >= 1 and o["index"]["age_s"] >= 0
    # freshness per stage: the late events' rows reached the index within the window
    delays = (o["index"]["apply_delay_p50_s"], o["index"]["apply_delay_p99_s"])
    assert delays[0] is not None and delays[1] is not None, o["index"]
    assert 0 <= delays[0] <= delays[1] < 30
    assert o["model"]["version"] >= 1 and 0 <= o["model"]["age_s"] < 120
    assert o["tables"]["user"]["rows"] == len(USERS) + 1
    trainer = o["trainer"]
    assert trainer["reachable"] is True and trainer["error"] is None
    assert trainer["events_consumed_total"] == len(events)
    assert trainer["batches"] >= 1 and trainer["published_version"] >= 1
    assert 0 < trainer["freshness_p50_s"] <= trainer["freshness_p99_s"] < 30
    assert sum(trainer["offsets"].values()) == len(events)

    # the page, rendered
    page = _load_page(chromium, f"{stack.ranker}/status", tmp_path / "chromium", SCREENSHOT)
    assert page.errors == [], f"the page's script failed: {page.errors}"
    assert page.root.get("data-state") == "live", page.root
    assert int(page.root["data-refreshes"]) >= 3, page.root
    assert page.root.get("data-trainer") == "up", page.root
    assert page.number("index.items") == len(ITEMS)
    assert page.number("index.version") == o["index"]["version"]
    assert page.number("trainer.events_consumed_total") == len(events)
    assert page.number("ranker.recommendations_total") == 2
    assert page.number("model.version") >= 1
    for stage in ("trainer.freshness_p99_s", "index.apply_delay_p99_s"):
        shown = page.field(stage)  # "—" once the stage's observations leave the 10 s window
        assert shown == "—" or shown.split()[-1] in ("µs", "ms", "s"), (stage, shown)
    # one of the two recommendations fell back; "—" once they leave the 10 s window
    assert page.field("ranker.fallback_share") in ("50.0%", "—")
    if trainer["auc"] is None:
        assert page.field("trainer.auc") == "—"
    else:
        assert page.number("trainer.auc") == pytest.approx(trainer["auc"], abs=0.0011)
    assert sorted(page.table_rows) == ["context", "item", "user"]
    assert page.polylines.get("chart-throughput", 0) >= 1, page.polylines
    _assert_not_blank(SCREENSHOT)

    # without the trainer the overview still answers, and the page says so
    pid = int((stack.run_dir / "trainer.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    _wait("the trainer to stop answering", lambda: not _overview(stack)["trainer"]["reachable"])
    down = _overview(stack)["trainer"]
    assert down["error"] and down["events_consumed_total"] is None and down["auc"] is None
    page = _load_page(chromium, f"{stack.ranker}/status", tmp_path / "chromium", None)
    assert page.errors == [], f"the page's script failed: {page.errors}"
    assert page.root.get("data-state") == "live", page.root
    assert page.root.get("data-trainer") == "down", page.root
    # the banner (hidden while the trainer answers) names the trainer and what failed
    shown = "".join(page.text)
    assert "trainer unreachable" in shown and f"{stack.trainer}: /v1/status" in shown
    assert page.field("trainer.events_consumed_total") == "—"
    assert page.number("index.items") == len(ITEMS)
